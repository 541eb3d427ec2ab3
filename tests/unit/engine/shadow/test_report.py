"""Report math (agreement, differences, PSI, KS) and the config model and store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from scipy import stats

from engine.shadow import ConfigStore, ShadowTables, build_config, compare, shadow_report
from engine.shadow.config import parse_time
from engine.shadow.log import ComparedRequest, PairLog
from engine.shadow.report import ks_statistic, psi
from registry.errors import InvalidTenantId, ValidationError


def test_compare_by_hand() -> None:
    p = np.array([0.1, 0.6, 0.4, 0.9])
    s = np.array([0.2, 0.4, 0.45, 0.95])
    c = compare(p, s)
    assert c.pairs == 4
    assert c.agreement == pytest.approx(0.75)  # row 2 flips the decision at 0.5
    assert c.mean_abs_diff == pytest.approx((0.1 + 0.2 + 0.05 + 0.05) / 4)
    assert c.max_abs_diff == pytest.approx(0.2)


def test_compare_empty() -> None:
    c = compare(np.array([]), np.array([]))
    assert c.pairs == 0 and c.agreement is None and c.psi is None


def test_ks_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.beta(2, 5, 500), rng.beta(2.5, 5, 400)
    assert ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)


def test_psi_zero_for_same_and_grows_with_shift() -> None:
    rng = np.random.default_rng(1)
    a = rng.random(5000)
    assert psi(a, a) == pytest.approx(0.0, abs=1e-12)
    assert psi(a, np.clip(a + 0.05, 0, 1)) < psi(a, np.clip(a + 0.3, 0, 1))
    # by hand: deciles of a uniform base, everything shifted into the top bin
    top = np.full(1000, 0.999)
    share = np.full(10, 1e-4)
    share[-1] = 1.0
    assert psi(a, top) == pytest.approx(float(np.sum((share - 0.1) * np.log(share / 0.1))),
                                        rel=0.02)


def test_build_config_validates() -> None:
    cfg = build_config("acme", 0.25, 3, until="2030-01-01T00:00:00Z")
    assert cfg.until == datetime(2030, 1, 1, tzinfo=UTC) and cfg.active()
    with pytest.raises(ValidationError):
        build_config("acme", 1.5)
    with pytest.raises(ValidationError):
        build_config("acme", 0.5, start="2030-01-02", until="2030-01-01")
    with pytest.raises(ValidationError):
        parse_time("yesterday")
    with pytest.raises(InvalidTenantId):
        build_config("../etc", 0.5)
    assert not build_config("acme", 0.0).active()
    past = datetime.now(UTC) - timedelta(seconds=1)
    assert not build_config("acme", 1.0, until=past).active()


def test_store_latest_row_wins(tmp_path: Any) -> None:
    store = ConfigStore(ShadowTables(str(tmp_path / "shadow"), {}))
    assert store.load() == {} and store.version() == -1
    store.set(build_config("a", 0.1))
    store.set(build_config("b", 0.2, version=4))
    store.set(build_config("a", 0.3))
    store.clear("b")
    configs = store.load()
    assert list(configs) == ["a"] and configs["a"].fraction == 0.3
    assert configs["a"].version is None
    store.clear("a")
    assert store.load() == {}
    store.set(build_config("a", 0.5, version=7))  # set again after a clear: live again
    assert {t: (c.fraction, c.version) for t, c in store.load().items()} == {"a": (0.5, 7)}


def test_report_picks_latest_version_pair_and_counts_drops(fresh: Any, h: Any) -> None:
    log = PairLog(ShadowTables.for_registry(fresh.reg), flush_rows=10_000, flush_s=60)
    now = datetime.now(UTC).timestamp()
    old = ComparedRequest(h.TENANT, "old", 1, 3, np.array([0.9]), np.array([0.1]), 0.001,
                          0.002, now - 10)
    log.add(old)
    for i in range(4):
        log.add(ComparedRequest(h.TENANT, f"q{i}", 1, 2, np.array([0.2, 0.7]),
                                np.array([0.3, 0.7]), 0.001 * (i + 1), 0.002, now + i))
    log.count(h.TENANT, 2, "dropped", 5)
    log.count(h.TENANT, 3, "dropped", 7)
    log.count(h.TENANT, 2, "error", 1)
    log.close()
    doc = shadow_report(fresh.reg, h.TENANT).to_json()
    assert (doc["production_version"], doc["shadow_version"]) == (1, 2)
    assert doc["pairs"] == 8 and doc["requests"] == 4 and doc["agreement"] == 1.0
    assert doc["mean_abs_diff"] == pytest.approx(0.05) and doc["max_abs_diff"] == pytest.approx(0.1)
    assert doc["dropped"] == 5 and doc["errors"] == 1
    assert doc["other_pairs"] == {"v1->v3": 1}
    assert doc["production_p50_ms"] == pytest.approx(2.5)
    assert doc["promote_command"] == f"tenantry registry promote {h.TENANT} 2"
    v3 = shadow_report(fresh.reg, h.TENANT, shadow_version=3).to_json()
    assert v3["pairs"] == 1 and v3["agreement"] == 0.0 and v3["dropped"] == 7
    later = datetime.fromtimestamp(now + 1.5, UTC)
    assert shadow_report(fresh.reg, h.TENANT, since=later).to_json()["pairs"] == 4


def test_report_with_nothing_logged(fresh: Any, h: Any) -> None:
    doc = shadow_report(fresh.reg, h.TENANT).to_json()
    assert doc["pairs"] == 0 and doc["agreement"] is None and doc["shadow_version"] == 2
    assert doc["promote_command"] is None


def test_store_bulk_set_and_clear(tmp_path: Any) -> None:
    store = ConfigStore(ShadowTables(str(tmp_path / "shadow"), {}))
    store.set_many([build_config(f"t{i}", 0.1) for i in range(50)] + [build_config("hot", 1.0)])
    assert len(store.load()) == 51 and store.version() == 0
    store.clear_many([f"t{i}" for i in range(50)])
    assert list(store.load()) == ["hot"]
