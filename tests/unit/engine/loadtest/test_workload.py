"""Zipf sampler frequencies and realistic per-tenant request bodies."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.loadtest.workload import (
    TenantProfile,
    WireProtocol,
    Workload,
    ZipfSampler,
    request_body,
    request_path,
)


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
    assert all(v is None or float(v).is_integer() for v in (r[col] for r in rows))


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


def test_v1_and_v2_bodies_carry_the_same_rows() -> None:
    rows = [[1.5, None, 3.0], [4.0, 5.0, None]]
    assert json.loads(request_body(rows)) == {"instances": rows}
    v2 = json.loads(request_body(rows, WireProtocol.V2))
    assert v2 == {"inputs": [{"name": "input__0", "datatype": "FP32", "shape": [2, 3],
                              "data": [1.5, None, 3.0, 4.0, 5.0, None]}]}
    assert b" " not in request_body(rows, WireProtocol.V2)  # compact, like v1
    assert request_path("acme") == "/v1/tenants/acme/predict"
    assert request_path("acme", WireProtocol.V2) == "/v2/models/acme/infer"


def test_v2_workload_posts_infer_requests_of_the_tenant_width() -> None:
    wl = Workload(["a", "b"], [3, 5], "h:1", 1.0, seed=0, rows_per_request=2,
                  protocol=WireProtocol("v2"))
    picks, raw = wl.requests(30)
    for idx, req in zip(picks, raw):
        head, _, body = req.partition(b"\r\n\r\n")
        tenant, width = ["a", "b"][idx], [3, 5][idx]
        assert head.startswith(f"POST /v2/models/{tenant}/infer HTTP/1.1".encode())
        assert f"Content-Length: {len(body)}".encode() in head
        (tensor,) = json.loads(body)["inputs"]
        assert tensor["shape"] == [2, width] and len(tensor["data"]) == 2 * width


def test_cli_protocol_flag_defaults_to_v1() -> None:
    from engine.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["loadtest", "--url", "http://h:1"]).protocol == "v1"
    assert parser.parse_args(["loadtest", "--url", "http://h:1", "--protocol", "v2"]
                             ).protocol == "v2"
    with pytest.raises(SystemExit):
        parser.parse_args(["loadtest", "--protocol", "v3"])
