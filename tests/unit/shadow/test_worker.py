"""The shadow worker and the mirror's dispatcher: batching, expiry, watchdog, failures."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from typing import Any, cast

import numpy as np
import pytest

from engine.serving.model import LoadedModel, load_model
from engine.shadow import ShadowTables, build_config, create_mirror, shadow_report
from engine.shadow.executors import build_worker, new_executor
from engine.shadow.tables import PAIRS
from engine.shadow.worker import MirrorItem, ShadowBatch

from .conftest import wait_until


def _send(h: Any, state: Any, n: int, prefix: str = "r") -> list[list[float]]:
    async def go() -> list[list[float]]:
        return [(await state.predict(h.TENANT, h.body(h.rows(1, seed=i)), f"{prefix}{i}"))
                .predictions for i in range(n)]
    return h.run(go())


def _item(fresh: Any, h: Any, i: int, synthetic: bool = False) -> MirrorItem:
    snap = fresh.reg.new_snapshot()
    prod, shadow = snap.version(h.TENANT, 1), snap.version(h.TENANT, 2)
    x = h.rows(2, seed=i)
    preds = fresh.production.inplace_predict(x).astype(np.float64)
    return MirrorItem(h.TENANT, prod, shadow, x, preds, f"req{i}", synthetic, 0.001,
                      time.time(), time.monotonic())


def test_worker_compares_a_batch_and_expires_what_waited_too_long(fresh: Any, h: Any) -> None:
    worker = build_worker(fresh.root, fresh.settings(), "unit:1")
    items = [_item(fresh, h, i) for i in range(3)] + [_item(fresh, h, 9, synthetic=True)]
    result = worker.process(ShadowBatch.pack(items, [10.0, 10.0, -1.0, 10.0],
                                             {(h.TENANT, 2, "dropped"): 4}))
    assert result.outcomes == {"ok": 2, "timeout": 1, "synthetic": 1}
    expected = np.abs(fresh.shadow.inplace_predict(np.vstack([i.x for i in items[:2]]))
                      - np.concatenate([i.predictions for i in items[:2]]))
    np.testing.assert_allclose(result.abs_diffs, expected, atol=1e-6)
    assert result.stats["buffered_pairs"] == 4 and result.stats["shadow_models"] == 1
    worker.close()
    assert ShadowTables.for_registry(fresh.reg).query(PAIRS).num_rows == 4
    report = shadow_report(fresh.reg, h.TENANT)
    assert (report.dropped, report.timeouts) == (4, 1)


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
        wait_until(lambda: mirror.executor.restarts == 1)
        assert mirror.outcomes["timeout"] == 1 and "restarted" in mirror.last_error
        _send(h, state, 5, "after")  # the new worker (new cache) answers these
        wait_until(lambda: mirror.outcomes["ok"] == 5)
    finally:
        release.set()
        state.close()
    report = shadow_report(fresh.reg, h.TENANT)
    assert report.comparison.pairs == 5 and report.timeouts == 1


class _Failing:
    """An executor whose worker always dies (as a crashed actor's futures do)."""

    kind, transport, restarts = "failing", "in-process", 0

    def submit(self, batch: ShadowBatch) -> Future[Any]:
        fut: Future[Any] = Future()
        fut.set_exception(RuntimeError("worker process died"))
        return fut

    def poll(self, handle: Future[Any]) -> Any:
        return handle.result()

    def ready(self) -> bool:
        return True

    def restart(self) -> None:
        self.restarts += 1

    def close(self, timeout_s: float) -> None:
        pass


def test_a_dead_worker_is_an_error_outcome_and_production_is_unaffected(
        fresh: Any, h: Any, closing: Any) -> None:
    from engine.shadow.mirror import ShadowMirror

    state = closing(fresh.host())
    mirror = ShadowMirror(state.snapshot, state.metrics, _Failing(), interval_s=0.01)
    state.shadow = mirror
    mirror.start()
    mirror.apply(h.TENANT, build_config(h.TENANT, 1.0))
    expected = _send(h, closing(fresh.host()), 6)
    assert _send(h, state, 6) == expected
    wait_until(lambda: mirror.outcomes["error"] == 6)
    assert "worker process died" in mirror.last_error and mirror.queue_depth == 0


def test_queue_bound_counts_requests_in_flight(fresh: Any, h: Any, closing: Any) -> None:
    state = closing(fresh.host(shadow_queue_size=3, shadow_batch_interval_s=3600))
    mirror, _ = create_mirror(state, state.settings)
    mirror.apply(h.TENANT, build_config(h.TENANT, 1.0))
    _send(h, state, 10)
    assert mirror.queue_depth == 3 and mirror.outcomes["dropped"] == 7


def test_unknown_worker_kind_is_refused(fresh: Any) -> None:
    with pytest.raises(ValueError, match="shadow_worker must be"):
        new_executor(fresh.root, fresh.settings(shadow_worker="process"))


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
