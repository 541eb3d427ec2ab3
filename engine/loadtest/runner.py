"""Run a load test: stages against a URL, /metrics before and after each, SLO search.

This is the library entry point behind ``tenantry loadtest``; the CLI only builds a
``LoadTestConfig`` and renders the returned ``LoadTestRun``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np

from engine.loadtest.capacity import MAX_ERROR_RATE, search
from engine.loadtest.hitratio import HitRatioCurve, hit_ratio_curve
from engine.loadtest.metrics_probe import MetricsSnapshot, diff, scrape
from engine.loadtest.progress import ProgressDisplay
from engine.loadtest.schedule import Arrivals, Stage, send_offsets
from engine.loadtest.stats import StageResult, summarize
from engine.loadtest.workers import LoadWorkers
from engine.loadtest.workload import WireProtocol, Workload
from registry.errors import ValidationError

__all__ = ["LoadTestConfig", "LoadTestRun", "Target", "parse_target", "run_loadtest"]

MAX_TOTAL_S = 3600.0


@dataclass(frozen=True)
class Target:
    """Where load goes: plain HTTP host and port."""

    host: str
    port: int

    @property
    def base_url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"


def parse_target(url: str) -> Target:
    """Parse ``http://host:port`` (no path, no TLS).

    Raises:
        ValidationError: for another scheme, a path, or a missing host.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValidationError(f"--url must look like http://HOST:PORT, got {url!r}")
    if parts.path not in ("", "/") or parts.query:
        raise ValidationError(f"--url must not carry a path, got {url!r}")
    return Target(parts.hostname, parts.port or 80)


@dataclass(frozen=True)
class LoadTestConfig:
    """Everything one load test needs (built by the CLI or a benchmark)."""

    url: str
    tenants: tuple[str, ...]
    widths: tuple[int, ...]
    rates: tuple[float, ...] = (50.0, 100.0, 200.0, 400.0, 800.0)
    hold_s: float = 10.0
    ramp_s: float = 1.0
    slo_p99_ms: float = 50.0
    zipf_s: float = 1.1
    cold_fraction: float = 0.0
    rows_per_request: int = 1
    workers: int = 1
    connections: int = 256  # per load process
    timeout_s: float = 5.0
    cooldown_s: float = 1.0
    refine: bool = True
    stop_on_fail: bool = True
    multiplexed_header: bool = False
    synthetic: bool = True  # send x-tenantry-synthetic: 1 (never logged as shadow pairs)
    arrivals: Arrivals = Arrivals.UNIFORM
    seed: int = 0
    protocol: WireProtocol = WireProtocol.V1  # v2: Open Inference Protocol infer requests

    def planned_seconds(self) -> float:
        """Upper bound on the run time of the stages (refinement included)."""
        per_stage = self.ramp_s + self.hold_s + self.cooldown_s + self.timeout_s + 1.0
        return per_stage * (len(self.rates) + int(self.refine))


@dataclass(frozen=True)
class LoadTestRun:
    """Results of a run: per-stage figures, the tenant trace and its hit-ratio curve."""

    config: LoadTestConfig
    stages: list[StageResult]
    trace: np.ndarray  # tenant indices of every request sent, in schedule order
    curve: HitRatioCurve
    replicas_seen: float | None
    mean_model_bytes: float | None
    elapsed_s: float
    notes: list[str] = field(default_factory=list)


class _Stages:
    """Runs one stage after another on the same load processes, keeping what the run
    reports: every request's tenant, the last /metrics snapshot, the previous rate."""

    def __init__(self, config: LoadTestConfig, target: Target, workers: LoadWorkers,
                 display: ProgressDisplay) -> None:
        self.config, self.target, self.workers, self.display = config, target, workers, display
        self.workload = Workload(config.tenants, config.widths, f"{target.host}:{target.port}",
                                 config.zipf_s, config.seed, config.cold_fraction,
                                 config.rows_per_request, config.multiplexed_header,
                                 config.synthetic, config.protocol)
        self.metrics_url = f"{target.base_url}/metrics"
        self.traces: list[np.ndarray] = []
        self.last: MetricsSnapshot | None = None
        self.previous_rate = 0.0

    def __call__(self, rate: float) -> StageResult:
        config, display, workers = self.config, self.display, self.workers
        index = len(self.traces) + 1
        stage = Stage(rate, config.hold_s, config.ramp_s, min(self.previous_rate, rate))
        offsets = send_offsets(stage, config.arrivals, config.seed + index)
        picks, requests = self.workload.requests(len(offsets))
        self.traces.append(picks)
        before = scrape(self.metrics_url)
        shown_total = max(len(config.rates), index)  # a refinement stage comes on top
        display.stage_started(index, shown_total, stage, len(offsets))
        outcome = workers.run_stage(self.target.host, self.target.port, offsets, requests,
                                    config.timeout_s, config.connections,
                                    poll=lambda: display.tick(*workers.progress()))
        self.last = scrape(self.metrics_url)
        result = summarize(stage, outcome, diff(before, self.last), config.slo_p99_ms,
                           MAX_ERROR_RATE)
        display.stage_finished(index, shown_total, result)
        self.previous_rate = rate
        time.sleep(config.cooldown_s)
        return result


def run_loadtest(config: LoadTestConfig, display: ProgressDisplay | None = None) -> LoadTestRun:
    """Ramp through the configured rates and measure each stage.

    Args:
        config: what to run.
        display: progress display (a silent one when None).

    Returns:
        the run's results.

    Raises:
        ValidationError: for a bad URL or an unbounded plan.
    """
    target = parse_target(config.url)
    if config.planned_seconds() > MAX_TOTAL_S:
        raise ValidationError(f"planned run of {config.planned_seconds():.0f}s exceeds the "
                              f"{MAX_TOTAL_S:.0f}s bound; use fewer rates or a shorter --duration")
    display = display or ProgressDisplay(enabled=False)
    started = time.monotonic()
    with LoadWorkers(config.workers) as workers:
        run_stage = _Stages(config, target, workers, display)
        if config.stop_on_fail:
            stages = search(config.rates, run_stage, config.refine)
        else:
            stages = [run_stage(rate) for rate in config.rates]
    traces = run_stage.traces
    trace = np.concatenate(traces) if traces else np.empty(0, dtype=np.int64)
    after = run_stage.last
    notes = []
    if any(s.generator_behind for s in stages):
        late = sum(s.generator_behind for s in stages)
        notes.append(f"the load generator fell behind its schedule (sends > 5 ms late) in "
                     f"{late} stage(s): their latencies include the generator's delay; add "
                     "--workers, or run on a less busy machine")
    model_bytes = None
    if after is not None and after.cache_bytes and after.cache_models:
        model_bytes = after.cache_bytes / after.cache_models
    return LoadTestRun(config, stages, trace, hit_ratio_curve(trace.tolist()),
                       after.replicas if after is not None else None, model_bytes,
                       time.monotonic() - started, notes)
