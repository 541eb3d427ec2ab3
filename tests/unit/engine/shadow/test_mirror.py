"""The mirror driven through ModelHostState: production is never affected by the shadow."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from engine.serving.model import LoadedModel, load_model
from engine.shadow import ConfigStore, ShadowTables, build_config, create_mirror, shadow_report
from engine.shadow.report import compare
from engine.shadow.tables import PAIRS

from .conftest import wait_until


def _predict_all(h: Any, state: Any, batches: list[np.ndarray], synthetic: bool = False,
                 prefix: str = "r") -> list[list[float]]:
    async def go() -> list[list[float]]:
        out = []
        for i, x in enumerate(batches):
            pred = await state.predict(h.TENANT, h.body(x), f"{prefix}{i}", synthetic)
            out.append(pred.predictions)
        return out
    return h.run(go())


class _Wrapped:
    """A LoadedModel stand-in whose predict is replaced."""

    def __init__(self, inner: LoadedModel, predict: Any) -> None:
        self._inner, self._predict = inner, predict
        self.feature_names, self.nbytes = inner.feature_names, inner.nbytes

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._predict(self._inner, x)


def _loader(state: Any, predict: Any) -> Any:
    return lambda mv: _Wrapped(load_model(state.registry, mv), predict)


def test_responses_identical_with_shadow_on_and_off(fresh: Any, h: Any, closing: Any) -> None:
    batches = [h.rows(1 + i % 3, seed=i) for i in range(20)]
    off = closing(fresh.host())
    without = _predict_all(h, off, batches)
    on = closing(fresh.host())
    mirror, _ = create_mirror(on, on.settings)
    mirror.apply(h.TENANT, build_config(h.TENANT, 1.0))
    with_shadow = _predict_all(h, on, batches)
    assert with_shadow == without  # exactly the same floats
    wait_until(lambda: mirror.outcomes["ok"] == len(batches))


def test_pairs_logged_with_correct_statistics(fresh: Any, h: Any) -> None:
    state = fresh.host()
    mirror, _ = create_mirror(state, state.settings)
    ConfigStore(ShadowTables.for_registry(fresh.reg)).set(build_config(h.TENANT, 1.0))
    mirror.set_configs(ConfigStore(ShadowTables.for_registry(fresh.reg)).load())
    batches = [h.rows(1 + i % 4, seed=100 + i) for i in range(40)]
    _predict_all(h, state, batches)
    wait_until(lambda: mirror.outcomes["ok"] == len(batches))
    state.close()  # graceful shutdown flushes the buffer

    x = np.vstack(batches)
    prod = fresh.production.inplace_predict(x).astype(np.float64)
    shadow = fresh.shadow.inplace_predict(x).astype(np.float64)
    log = ShadowTables.for_registry(fresh.reg).query(PAIRS).to_pandas()
    assert len(log) == len(x)
    log = log.sort_values(["request_id", "row"], key=lambda s: s.map(
        lambda v: int(v[1:]) if isinstance(v, str) else v))
    np.testing.assert_allclose(log["production"], prod, atol=1e-6)
    np.testing.assert_allclose(log["shadow"], shadow, atol=1e-6)
    assert set(log["production_version"]) == {1} and set(log["shadow_version"]) == {2}

    report = shadow_report(fresh.reg, h.TENANT)
    expected = compare(prod, shadow)
    doc = report.to_json()
    assert doc["pairs"] == len(x) and doc["requests"] == len(batches)
    assert (doc["production_version"], doc["shadow_version"]) == (1, 2)
    for key in ("agreement", "mean_abs_diff", "max_abs_diff", "psi", "ks"):
        assert doc[key] == pytest.approx(getattr(expected, key), abs=1e-6), key
    assert 0 < doc["agreement"] < 1 and doc["mean_abs_diff"] > 0  # models really differ
    assert doc["dropped"] == 0 and doc["production_p99_ms"] > 0


def test_window_end_stops_mirroring(fresh: Any, h: Any, closing: Any) -> None:
    state = closing(fresh.host())
    mirror, _ = create_mirror(state, state.settings)
    t0 = datetime.now(UTC)
    now = [t0.timestamp()]
    mirror.clock = lambda: now[0]
    mirror.apply(h.TENANT, build_config(h.TENANT, 1.0, until=t0 + timedelta(seconds=60)))
    _predict_all(h, state, [h.rows(1, seed=i) for i in range(5)])
    wait_until(lambda: mirror.outcomes["ok"] == 5)
    now[0] += 61  # past the window
    _predict_all(h, state, [h.rows(1, seed=i) for i in range(5)], prefix="late")
    time.sleep(0.3)  # deliberate: nothing more may be mirrored in the meantime
    assert mirror.outcomes["ok"] == 5 and mirror.spool.appended == 5
    assert not mirror.config(h.TENANT).active(t0 + timedelta(seconds=61))


def test_window_start_in_future_does_not_mirror(fresh: Any, h: Any, closing: Any) -> None:
    state = closing(fresh.host())
    mirror, _ = create_mirror(state, state.settings)
    start = datetime.now(UTC) + timedelta(hours=1)
    mirror.apply(h.TENANT, build_config(h.TENANT, 1.0, start=start))
    _predict_all(h, state, [h.rows(1)])
    time.sleep(0.2)  # deliberate: nothing may be mirrored in the meantime
    assert sum(mirror.outcomes.values()) == 0


def test_full_spool_drops_and_a_hanging_shadow_never_blocks(fresh: Any, h: Any,
                                                            closing: Any) -> None:
    state = closing(fresh.host())
    release = threading.Event()
    entered = threading.Event()

    def hang(inner: LoadedModel, x: np.ndarray) -> np.ndarray:
        entered.set()
        release.wait(30)
        return inner.predict(x)

    mirror, _ = create_mirror(state, state.settings, loader=_loader(state, hang))
    mirror.spool.max_segments = 2  # a tiny spool: two segments
    mirror.spool.segment_bytes = 600
    mirror.apply(h.TENANT, build_config(h.TENANT, 1.0))
    batches = [h.rows(1, seed=i) for i in range(30)]
    expected = _predict_all(h, closing(fresh.host()), batches)
    _predict_all(h, state, batches[:1])
    assert entered.wait(10)  # the worker is now stuck inside the shadow model
    got = _predict_all(h, state, batches)  # production keeps answering meanwhile
    assert got[0] == expected[0] and got == expected
    dropped = mirror.outcomes["dropped"]
    mirrored = len(batches) + 1 - dropped  # spooled (the spool also holds drop counts)
    assert dropped >= 10 and mirror.spool.appended >= mirrored
    metrics = state.metrics.render().decode()
    assert f'tenantry_shadow_requests_total{{outcome="dropped"}} {float(dropped)}' in metrics
    release.set()
    wait_until(lambda: mirror.outcomes["ok"] == mirrored)
    state.close()
    report = shadow_report(fresh.reg, h.TENANT)
    assert report.dropped == dropped
    assert report.comparison.pairs == mirrored


def test_raising_shadow_never_affects_production(fresh: Any, h: Any, closing: Any) -> None:
    state = closing(fresh.host())

    def boom(inner: LoadedModel, x: np.ndarray) -> np.ndarray:
        raise RuntimeError("shadow exploded")

    mirror, _ = create_mirror(state, state.settings, loader=_loader(state, boom))
    mirror.apply(h.TENANT, build_config(h.TENANT, 1.0))
    batches = [h.rows(2, seed=i) for i in range(10)]
    assert _predict_all(h, state, batches) == _predict_all(h, closing(fresh.host()), batches)
    wait_until(lambda: mirror.outcomes["error"] == 10)
    assert "shadow exploded" in mirror.last_error
    state.close()
    report = shadow_report(fresh.reg, h.TENANT)
    assert report.comparison.pairs == 0 and report.errors == 10


def test_failing_loader_is_an_error_outcome(fresh: Any, h: Any, closing: Any) -> None:
    state = closing(fresh.host())

    def bad_loader(mv: Any) -> Any:
        raise OSError("artifact unreadable")

    mirror, _ = create_mirror(state, state.settings, loader=bad_loader)
    mirror.apply(h.TENANT, build_config(h.TENANT, 1.0))
    assert len(_predict_all(h, state, [h.rows(1)] * 3)) == 3
    wait_until(lambda: mirror.outcomes["error"] == 3)


def test_synthetic_requests_are_never_logged(fresh: Any, h: Any) -> None:
    state = fresh.host()
    mirror, _ = create_mirror(state, state.settings)
    mirror.apply(h.TENANT, build_config(h.TENANT, 1.0))
    _predict_all(h, state, [h.rows(1, seed=i) for i in range(8)], synthetic=True)
    wait_until(lambda: mirror.outcomes["synthetic"] == 8)
    state.close()
    assert mirror.outcomes["ok"] == 0
    assert ShadowTables.for_registry(fresh.reg).query(PAIRS).num_rows == 0


def test_fraction_samples_and_alias_resolution(fresh: Any, h: Any, closing: Any) -> None:
    state = closing(fresh.host())
    mirror, _ = create_mirror(state, state.settings)
    draws = iter([0.05, 0.5, 0.09, 0.95] * 10)
    mirror._rand = lambda: next(draws)
    mirror.apply(h.TENANT, build_config(h.TENANT, 0.1))
    assert mirror.resolve(h.TENANT) == 2  # the shadow alias
    _predict_all(h, state, [h.rows(1)] * 8)
    wait_until(lambda: mirror.outcomes["ok"] == 4)
    mirror.apply(h.TENANT, build_config(h.TENANT, 1.0, version=1))  # = production: nothing
    _predict_all(h, state, [h.rows(1)])
    assert mirror.outcomes["skipped"] == 1 and mirror.pinned_versions(h.TENANT) == [1]
    mirror.apply(h.TENANT, None)
    _predict_all(h, state, [h.rows(1)])
    assert mirror.outcomes["skipped"] == 1 and mirror.pinned_versions(h.TENANT) == []


def test_config_reaches_a_replica_through_the_table(fresh: Any, h: Any, closing: Any) -> None:
    state = closing(fresh.host())
    mirror, _ = create_mirror(state, state.settings)
    assert mirror.config(h.TENANT) is None
    ConfigStore(ShadowTables.for_registry(fresh.reg)).set(build_config(h.TENANT, 0.5))
    wait_until(lambda: mirror.config(h.TENANT) is not None)  # the watcher thread picked it up
    assert mirror.config(h.TENANT).fraction == 0.5
    ConfigStore(ShadowTables.for_registry(fresh.reg)).clear(h.TENANT)
    wait_until(lambda: mirror.config(h.TENANT) is None)


def test_a_host_above_normal_niceness_is_told_and_reports_it(fresh: Any, closing: Any,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    import os

    monkeypatch.setattr(os, "getpriority", lambda which, who: 15)  # Ray's default workers
    state = closing(fresh.host())
    with caplog.at_level("WARNING", logger="engine.shadow.mirror"):
        mirror, _ = create_mirror(state, state.settings)
    assert "niceness 15" in caplog.text and "RAY_worker_niceness=0" in caplog.text
    assert mirror.stats()["niceness"] == 15
    monkeypatch.undo()
    assert mirror.stats()["niceness"] == os.getpriority(os.PRIO_PROCESS, 0)
