"""Stage summaries: latency from intended time, achieved by completion, lateness flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.loadtest.metrics_probe import diff
from engine.loadtest.schedule import Stage, send_offsets
from engine.loadtest.stats import summarize
from engine.loadtest.tenants import choose_tenants
from engine.loadtest.workers import StageOutcome


def _outcome(offsets: np.ndarray, latency: float, lag: float = 0.0,
             status: int = 200) -> StageOutcome:
    n = len(offsets)
    lat = np.full(n, latency)
    return StageOutcome(offsets, lat, offsets + lat, np.full(n, lag),
                        np.full(n, status, dtype=np.int16), (0.5,), 5.0)


def test_on_time_stage_passes() -> None:
    stage = Stage(100.0, 4.0, ramp_s=1.0, ramp_from_rps=50.0)
    offsets = send_offsets(stage)
    result = summarize(stage, _outcome(offsets, 0.010), diff(None, None), 50.0, 0.001)
    assert result.requests == 400 and result.passed and not result.generator_behind
    assert abs(result.achieved_rps - 100.0) < 1.0 and abs(result.p99_ms - 10.0) < 1e-6


def test_overloaded_server_shows_real_throughput() -> None:
    stage = Stage(200.0, 4.0)
    offsets = send_offsets(stage)
    done = np.arange(len(offsets)) / 100.0  # the server completes 100 req/s
    outcome = StageOutcome(offsets, done - offsets, done, np.zeros(len(offsets)),
                           np.full(len(offsets), 200, dtype=np.int16), (0.1,), 8.0)
    result = summarize(stage, outcome, diff(None, None), 50.0, 0.001)
    assert abs(result.achieved_rps - 100.0) < 1.0 and not result.passed
    assert result.p99_ms > 1000


def test_late_sends_and_errors_are_flagged() -> None:
    stage = Stage(100.0, 2.0)
    offsets = send_offsets(stage)
    late = summarize(stage, _outcome(offsets, 0.01, lag=0.02), diff(None, None), 50.0, 0.001)
    assert late.generator_behind and late.behind_schedule_count == 200
    assert late.behind_schedule_max_ms == 20.0
    failed = summarize(stage, _outcome(offsets, 0.01, status=503), diff(None, None), 50.0,
                       0.001)
    assert failed.error_rate == 1.0 and not failed.passed and failed.achieved_rps == 0
    assert failed.status_counts == {"503": 200}


def test_tenant_source_auto_falls_back_to_synthetic(tmp_path: Path) -> None:
    ts = choose_tenants("auto", str(tmp_path / "none"), 7, 11)
    assert ts.source == "synthetic" and len(ts.ids) == 7 and set(ts.widths) == {11}
