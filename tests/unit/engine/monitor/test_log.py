"""The prediction log: sampling, first requests per hour, bounded buffer, Delta writes."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from engine.metrics import Metrics
from engine.monitor.log import PredictionLog, attach_prediction_log
from engine.monitor.tables import PREDICTIONS, DeltaAppender
from engine.serving.host import ModelHostState
from engine.settings import ServeSettings
from registry import AliasMove, ModelVersion, NewVersion, Registry
from tests.conftest import train_tiny, wait_for

HOUR = 3600.0
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class FailingTable:
    """A table whose writes fail until told otherwise."""

    def __init__(self) -> None:
        self.fail = True
        self.written: list[pa.Table] = []

    def append(self, rows: pa.Table, app_id: str | None = None) -> None:
        if self.fail:
            raise OSError("disk full")
        self.written.append(rows)


def _mv(version: int = 3) -> ModelVersion:
    return ModelVersion("acme", 0, version, "x", "0" * 64, 1, ("a", "b"), {}, "r",
                        datetime.now(UTC))


def _send(log: PredictionLog, n: int = 1, rows: int = 1, synthetic: bool = False,
          tenant: str = "acme") -> None:
    for i in range(n):
        x = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)
        log.after_predict(tenant, _mv(), x, np.full(rows, 0.25, np.float32), f"r{i}",
                          synthetic, 0.001)


def _log(table: Any, **kw: Any) -> tuple[PredictionLog, Metrics, Clock]:
    metrics, clock = Metrics(), Clock()
    kw.setdefault("rand", lambda: 0.0)
    return PredictionLog(table, metrics, clock=clock, **kw), metrics, clock


def _count(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value("tenantry_prediction_log_rows_total",
                                              {"outcome": outcome})
    return value or 0.0


def test_first_requests_of_each_hour_then_a_sample() -> None:
    log, _, clock = _log(FailingTable(), sample=0.0, first_per_hour=2)
    _send(log, 5)
    _send(log, 5, tenant="globex")
    assert log.buffered_rows == 4  # two each
    clock.now += HOUR
    _send(log, 5)
    assert log.buffered_rows == 6
    draws = iter([0.5, 0.005, 0.9])  # 1%: only the second is under it
    sampled, _, _ = _log(FailingTable(), sample=0.01, first_per_hour=0,
                         rand=lambda: next(draws))
    _send(sampled, 3)
    assert sampled.buffered_rows == 1


def test_synthetic_requests_are_never_logged() -> None:
    log, _, _ = _log(FailingTable(), sample=1.0)
    _send(log, 4, synthetic=True)
    assert log.buffered_rows == 0 and log.synthetic == 4


def test_buffer_is_bounded_and_drops_are_counted() -> None:
    log, metrics, _ = _log(FailingTable(), sample=1.0, buffer_rows=10)
    _send(log, 4, rows=4)  # 4 + 4 fit, the next two do not
    assert log.buffered_rows == 8 and log.dropped_rows == 8
    assert _count(metrics, "dropped") == 8


def test_failed_writes_keep_what_fits_then_write() -> None:
    table = FailingTable()
    log, metrics, _ = _log(table, sample=1.0, buffer_rows=6)
    _send(log, 3, rows=2)
    assert log.flush() == 0 and log.write_errors == 1 and log.buffered_rows == 6
    _send(log, 1, rows=2)  # no room while the failed rows wait
    assert log.dropped_rows == 2
    table.fail = False
    assert log.flush() == 6 and _count(metrics, "logged") == 6
    assert table.written[0].column("request_id").to_pylist() == ["r0", "r0", "r1", "r1",
                                                                 "r2", "r2"]


def test_close_writes_the_rest_to_delta(tmp_path: Path) -> None:
    table = DeltaAppender(str(tmp_path / "predictions"), PREDICTIONS, {})
    log, metrics, _ = _log(table, sample=1.0, replica="h:1")
    x = np.array([[1.5, np.nan], [2.0, 3.0]], dtype=np.float32)
    log.after_predict("acme", _mv(7), x, np.array([0.1, 0.9], np.float32), "req", False, 0.0)
    log.close()
    log.close()  # idempotent
    _send(log, 1)  # closed: ignored
    rows = table.sql("SELECT * FROM t ORDER BY row").to_pylist()
    assert [r["features"] for r in rows] == [[1.5, None], [2.0, 3.0]]
    assert [r["score"] for r in rows] == pytest.approx([0.1, 0.9])
    assert {(r["tenant_id"], r["version"], r["date"], r["sampled"], r["replica"])
            for r in rows} == {("acme", 7, "2026-03-02", "first", "h:1")}
    assert _count(metrics, "logged") == 2


def test_the_flusher_writes_when_enough_rows_wait(tmp_path: Path) -> None:
    table = DeltaAppender(str(tmp_path / "predictions"), PREDICTIONS, {})
    log = PredictionLog(table, sample=1.0, flush_rows=3, flush_s=60.0)
    log.start()
    try:
        _send(log, 3)
        wait_for(lambda: log.logged_rows >= 3, timeout=20)
        assert log.logged_rows == 3
    finally:
        log.close()


def _model() -> bytes:
    return train_tiny(0, features=("a", "b"), rounds=3)


def test_a_model_host_logs_production_answers(tmp_path: Path) -> None:
    reg = Registry.create(str(tmp_path / "reg"), 2)
    staged = reg.stage_artifact("acme", _model(), "r1")
    reg.publish("r1", [NewVersion(staged, ("a", "b"), {"auc": 0.9})],
                [AliasMove("acme", "production", staged.version)])
    body = json.dumps({"instances": [[0.5, None]]}).encode()

    async def serve(settings: ServeSettings) -> ModelHostState:
        state = ModelHostState(settings, reg)
        attach_prediction_log(state)  # as the Serve app does
        for i in range(3):
            await state.predict("acme", body, f"p{i}")
        await state.predict("acme", body, "synthetic", synthetic=True)
        state.close()
        return state

    state = asyncio.run(serve(ServeSettings(registry=reg.root, log_sample=0.5,
                                            log_first_per_hour=3)))
    rows = DeltaAppender.for_registry(reg, PREDICTIONS).sql("SELECT request_id FROM t")
    assert sorted(rows.column("request_id").to_pylist()) == ["p0", "p1", "p2"]
    assert len(state.hooks) == 1
    off = asyncio.run(serve(ServeSettings(registry=reg.root, log_sample=0.0)))
    assert off.hooks == []
