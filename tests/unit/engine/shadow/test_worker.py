"""The shadow worker and its pump: predictions, exactly-once logging, watchdog."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from engine.serving.model import LoadedModel, load_model
from engine.shadow import ShadowTables, build_config, create_mirror, shadow_report
from engine.shadow.executors import build_pump, new_executor
from engine.shadow.pump import read_totals
from engine.shadow.records import encode_counts, encode_pair
from engine.shadow.spool import SpoolWriter
from engine.shadow.tables import PAIRS
from tests.conftest import count_self_checks

from .conftest import wait_until


def _send(h: Any, state: Any, n: int, prefix: str = "r") -> list[list[float]]:
    async def go() -> list[list[float]]:
        return [(await state.predict(h.TENANT, h.body(h.rows(1, seed=i)), f"{prefix}{i}"))
                .predictions for i in range(n)]
    return h.run(go())


def _record(fresh: Any, h: Any, writer: SpoolWriter, i: int, synthetic: bool = False) -> bytes:
    x = h.rows(2, seed=i)
    preds = fresh.production.inplace_predict(x).astype(np.float64)
    return encode_pair(writer.next_seq(), h.TENANT, f"req{i}", 1, 2, time.time(), 0.001,
                       synthetic, x, preds)


def test_pump_logs_each_record_once_even_when_sent_again(fresh: Any, h: Any,
                                                        tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path)
    for i in range(3):
        writer.append(_record(fresh, h, writer, i))
    writer.append(_record(fresh, h, writer, 9, synthetic=True))
    writer.append(encode_counts(writer.next_seq(), {(h.TENANT, 2, "dropped"): 4}))
    settings = fresh.settings(shadow_flush_s=3600)
    pump = build_pump(fresh.root, settings, "unit:1", writer.path)
    assert pump.step() == 5
    assert dict(pump.outcomes) == {"ok": 3, "synthetic": 1}
    x = np.vstack([h.rows(2, seed=i) for i in range(3)])
    expected = np.abs(fresh.shadow.inplace_predict(x) - fresh.production.inplace_predict(x))
    assert pump.buckets.sum() == len(expected)
    assert pump.diff_sum == pytest.approx(float(expected.sum()), abs=1e-5)
    assert pump.worker.log.flush()  # committed, then the worker dies before acknowledging
    again = build_pump(fresh.root, settings, "unit:1", writer.path)
    assert again.step() == 5  # everything is sent again ...
    assert again.drain(10)
    assert ShadowTables.for_registry(fresh.reg).query(PAIRS).num_rows == 6  # ... logged once
    report = shadow_report(fresh.reg, h.TENANT)
    assert report.requests == 3 and report.dropped == 4
    assert not writer.pending() and writer.close()
    assert read_totals(writer.path) == {}  # the spool is gone with everything committed


def test_a_running_worker_adopts_a_dead_replicas_spool(fresh: Any, h: Any,
                                                      tmp_path: Path) -> None:
    dead = SpoolWriter(tmp_path)
    for i in range(4):
        dead.append(_record(fresh, h, dead, i))
    mine = SpoolWriter(tmp_path)
    pump = build_pump(fresh.root, fresh.settings(), "unit:2", mine.path)
    assert pump.step() == 0  # the other replica is alive: its spool is not touched
    os.close(dead._lock_fd)  # type: ignore[arg-type]  # it dies
    dead._lock_fd = None
    pump._discovered = 0.0
    assert pump.step() == 4 and pump.drain(10)
    assert ShadowTables.for_registry(fresh.reg).query(PAIRS).num_rows == 8
    assert not dead.path.exists() and not (mine.path / "adopted" / dead.id).exists()
    assert mine.close()


def test_watchdog_restarts_a_hung_worker_and_shadowing_resumes(fresh: Any, h: Any) -> None:
    state = fresh.host(shadow_max_age_s=0.5)
    release, hung = threading.Event(), threading.Event()

    class Hangs:
        def __init__(self, inner: LoadedModel) -> None:
            self.inner, self.feature_names, self.nbytes = inner, inner.feature_names, 1

        def predict(self, x: np.ndarray) -> np.ndarray:
            if not hung.is_set():  # only the first call ever hangs
                hung.set()
                release.wait(30)
            return self.inner.predict(x)

    mirror, _ = create_mirror(state, state.settings,
                              loader=lambda mv: cast(LoadedModel,  # LoadedModel's surface
                                                     Hangs(load_model(state.registry, mv))))
    mirror.apply(h.TENANT, build_config(h.TENANT, 1.0))
    try:
        _send(h, state, 1, "stuck")
        assert hung.wait(10)
        wait_until(lambda: mirror.outcomes["timeout"] == 1)  # counted by the next worker
        assert mirror.executor.restarts == 1  # type: ignore[union-attr]
        assert "restarted" in mirror.last_error
        _send(h, state, 5, "after")  # the new worker (new cache) answers these
        wait_until(lambda: mirror.outcomes["ok"] == 5)
    finally:
        release.set()
        state.close()
    report = shadow_report(fresh.reg, h.TENANT)
    assert report.comparison.pairs == 5 and report.timeouts == 1


def test_unknown_worker_kind_is_refused(fresh: Any) -> None:
    with pytest.raises(ValueError, match="shadow_worker must be"):
        new_executor(fresh.root, fresh.settings(shadow_worker="process"), Path("."))


def test_lower_priority_moves_every_thread_to_sched_idle() -> None:
    code = ("import os, threading\n"
            "from engine.shadow.worker import lower_priority\n"
            "before = threading.Thread(target=threading.Event().wait, args=(2,), daemon=True)\n"
            "before.start()\n"
            "assert lower_priority()\n"
            "late = threading.Thread(target=lambda: print(os.sched_getscheduler(0)))\n"
            "late.start(); late.join()\n"
            "print(os.sched_getscheduler(0), os.sched_getscheduler(before.native_id))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    idle = str(os.SCHED_IDLE)
    assert out == [idle, idle, idle]  # started later, the caller, a thread started before


def test_a_tenants_records_of_one_batch_are_predicted_in_one_call(fresh: Any, h: Any,
                                                                  tmp_path: Path) -> None:
    calls: list[int] = []

    class Counted:
        def __init__(self, inner: LoadedModel) -> None:
            self.inner, self.feature_names, self.nbytes = inner, inner.feature_names, 1

        def predict(self, x: np.ndarray) -> np.ndarray:
            calls.append(len(x))
            return self.inner.predict(x)

    writer = SpoolWriter(tmp_path)
    for i in range(4):
        writer.append(_record(fresh, h, writer, i))
    settings = fresh.settings(shadow_flush_s=3600)
    pump = build_pump(fresh.root, settings, "unit:1", writer.path,
                      loader=lambda mv: cast(LoadedModel, Counted(load_model(fresh.reg, mv))))
    assert pump.step() == 4
    assert calls == [8]  # 4 records x 2 rows, one call
    assert dict(pump.outcomes) == {"ok": 4}
    assert pump.drain(10)
    log = ShadowTables.for_registry(fresh.reg).query(PAIRS).to_pandas()
    assert sorted(set(log["request_id"])) == [f"req{i}" for i in range(4)]
    xs = np.vstack([h.rows(2, seed=i) for i in range(4)])
    want = fresh.shadow.inplace_predict(xs)
    got = log.sort_values(["request_id", "row"])["shadow"].to_numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)  # each record got its own rows' answers


def test_a_shadow_model_loaded_again_is_not_self_checked_again(fresh: Any, h: Any,
                                                              tmp_path: Path,
                                                              monkeypatch: Any) -> None:
    checks = count_self_checks(monkeypatch)
    writer = SpoolWriter(tmp_path)
    # A budget smaller than one model: every batch loads the shadow model anew.
    pump = build_pump(fresh.root, fresh.settings(shadow_flush_s=3600, shadow_cache_mb=1e-6),
                      "unit:1", writer.path)
    for i in range(3):
        writer.append(_record(fresh, h, writer, i))
        assert pump.step() == 1
    assert pump.worker.models.loads == 3 and len(pump.worker.models) == 0
    assert checks == ["check"]  # the first load checked the forest; the others remembered it
    assert dict(pump.outcomes) == {"ok": 3}
