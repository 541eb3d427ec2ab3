"""Zipf sampler frequencies and realistic per-tenant request bodies."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.loadtest.workload import TenantProfile, Workload, ZipfSampler


def test_zipf_frequencies_follow_rank_power_law() -> None:
    sampler = ZipfSampler(100, 1.1, seed=1)
    picks = sampler.sample(200_000)
    counts = np.bincount(picks, minlength=100)
    by_rank = counts[sampler.rank_to_index]
    expected = sampler.probabilities * len(picks)
    assert np.allclose(by_rank[:10], expected[:10], rtol=0.05)
    assert by_rank[0] / by_rank[9] == pytest.approx(10 ** 1.1, rel=0.1)


def test_zipf_zero_is_uniform_and_cold_fraction_spreads_load() -> None:
    counts = np.bincount(ZipfSampler(10, 0.0, seed=2).sample(50_000), minlength=10)
    assert counts.min() > 0.9 * 5000
    hot = ZipfSampler(1000, 2.0, seed=3).sample(20_000)
    mixed = ZipfSampler(1000, 2.0, seed=3, cold_fraction=0.5).sample(20_000)
    assert len(set(mixed.tolist())) > 2 * len(set(hot.tolist()))


def test_popular_tenant_is_not_simply_the_first() -> None:
    heads = {ZipfSampler(50, 1.2, seed=s).rank_to_index[0] for s in range(10)}
    assert len(heads) > 1


def test_rows_have_tenant_width_missing_values_and_integers() -> None:
    rng = np.random.default_rng(0)
    profile = TenantProfile.random(12, rng)
    rows = profile.rows(2000, rng)
    assert all(len(r) == 12 for r in rows)
    flat = [v for r in rows for v in r]
    assert any(v is None for v in flat)
    col = next(i for i in range(12) if profile.integer[i])
    assert all(r[col] is None or float(r[col]).is_integer() for r in rows)


def test_requests_carry_synthetic_header_and_valid_json() -> None:
    wl = Workload(["a", "b"], [3, 5], "h:1", 1.0, seed=0, multiplexed_header=True)
    picks, raw = wl.requests(50)
    for idx, req in zip(picks, raw):
        head, _, body = req.partition(b"\r\n\r\n")
        tenant = ["a", "b"][idx]
        assert head.startswith(f"POST /v1/tenants/{tenant}/predict HTTP/1.1".encode())
        assert b"\r\nx-tenantry-synthetic: 1" in head
        assert f"\r\nserve_multiplexed_model_id: {tenant}".encode() in head
        assert f"Content-Length: {len(body)}".encode() in head
        assert len(json.loads(body)["instances"][0]) == [3, 5][idx]


def test_unmarked_requests_carry_no_synthetic_header() -> None:
    _, raw = Workload(["a", "b"], [3, 5], "h:1", 1.0, seed=0, synthetic=False).requests(20)
    assert raw and not any(b"x-tenantry-synthetic" in req for req in raw)
