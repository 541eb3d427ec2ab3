"""The monitoring job: a day of the prediction log judged against the models' profiles.

Flow (the driver holds per-tenant counts and figures only, never rows)::

    <root>/predictions: rows per (tenant, version, date) over the day and the days before
      -> per tenant: the version to judge (its newest with >= min_rows rows that day),
         its volume against the median of the previous days
      -> Ray Data: from_items(buckets of tenants).map(judge_bucket)
      -> verdicts (engine.monitor.judge) -> one commit of one row per tenant into
         <root>/monitoring, marked tenantry-monitor-<run_id> (a re-run writes nothing)
      -> <root>/monitoring.prom: flagged tenants and run outcomes (Prometheus text file)
"""

from __future__ import annotations

import pickle
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.metrics import MonitorJobMetrics
from engine.monitor.judge import Status, TenantFigures, Volume, judge
from engine.monitor.report import MonitorRunReport, monitoring_rows
from engine.monitor.settings import MonitorSettings
from engine.monitor.tables import (
    MONITORING,
    PREDICTIONS,
    PROM_FILE,
    DeltaAppender,
    monitor_app_id,
)
from engine.monitor.task import BucketResult, MonitorBucket, MonitorContext, Pick, judge_bucket
from registry import Registry, validate_run_id
from registry.delta import sql_str
from training.errors import DataNotFound
from training.table import parse_date, window_dates

__all__ = ["Runner", "default_run_id", "ray_runner", "run_monitoring"]

Runner = Callable[[MonitorContext, list[MonitorBucket]], Iterator[BucketResult]]
"""Runs buckets and yields their results as they finish (Ray Data, or in-process in tests)."""


def default_run_id(date: str) -> str:
    """``monitor-<date>``: one run per day, so a retry finds it written."""
    return f"monitor-{date}"


@dataclass(frozen=True)
class _BucketFn:
    """The Ray Data map function: a picklable callable around :func:`judge_bucket`."""

    ctx: MonitorContext

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"result": pickle.dumps(judge_bucket(self.ctx, pickle.loads(row["bucket"])))}


def ray_runner(settings: MonitorSettings) -> Runner:
    """Buckets as Ray Data tasks (one CPU each), on the Ray this process joins or starts."""
    def run(ctx: MonitorContext, buckets: list[MonitorBucket]) -> Iterator[BucketResult]:
        import ray.data

        from training.cluster import ensure_ray, quiet_unthrottled_data_context

        ensure_ray(settings.ray_address, settings.num_cpus)
        with quiet_unthrottled_data_context():  # buckets return KBs: no backpressure needed
            items = ray.data.from_items([{"bucket": pickle.dumps(b)} for b in buckets],
                                        override_num_blocks=len(buckets))
            for row in items.map(_BucketFn(ctx), num_cpus=1).iter_rows():
                yield pickle.loads(row["result"])
    return run


def _counts(preds: DeltaAppender, dates: tuple[str, ...]) -> list[dict[str, Any]]:
    days = ", ".join(sql_str(d) for d in dates)
    return preds.sql(f"SELECT tenant_id, version, date, COUNT(*) AS n FROM t WHERE date IN "
                     f"({days}) GROUP BY tenant_id, version, date").to_pylist()


def _plan(counts: list[dict[str, Any]], date: str, earlier: tuple[str, ...],
          s: MonitorSettings) -> tuple[list[Pick], dict[str, Volume]]:
    """Per tenant: the version to judge and its volume against the previous days."""
    today: dict[str, dict[int, int]] = defaultdict(dict)
    before: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for c in counts:
        if c["date"] == date:
            today[c["tenant_id"]][int(c["version"])] = int(c["n"])
        else:
            before[c["tenant_id"]][c["date"]] += int(c["n"])
    picks, volumes = [], {}
    for tenant in sorted(set(today) | set(before)):
        # A day without its rows counts as 0, once the tenant has a history to compare with.
        baseline = (statistics.median(before[tenant].get(d, 0) for d in earlier)
                    if len(before[tenant]) >= s.volume_min_days else None)
        rows = sum(today[tenant].values()) if tenant in today else 0
        if tenant not in today and (baseline or 0) < s.min_rows:
            continue  # a small tenant that sent nothing today is not news
        volumes[tenant] = Volume(rows, baseline)
        if tenant in today:
            by_version = today[tenant]
            enough = [v for v, n in by_version.items() if n >= s.min_rows]
            version = max(enough or by_version)
            picks.append(Pick(tenant, version, by_version[version]))
    return picks, volumes


def _record(reg: Registry, outcome: str, report: MonitorRunReport | None) -> str:
    """Update the Prometheus text file next to the monitoring table; returns its URI."""
    try:
        previous = MonitorJobMetrics.parse(reg.store.read(PROM_FILE).decode())
    except (FileNotFoundError, OSError, UnicodeDecodeError):
        previous = {}
    m = MonitorJobMetrics(previous)
    m.runs.labels(outcome).inc()
    if report is not None and outcome == "ok":
        m.flagged.set(len(report.flagged))
        m.tenants.set(report.tenants)
        m.last_success.set(time.time())
    reg.store.write(PROM_FILE, m.render())
    return reg.store.uri(PROM_FILE)


def run_monitoring(registry: Registry | str, *, date: str | None = None,
                   run_id: str | None = None, settings: MonitorSettings | None = None,
                   runner: Runner | None = None) -> MonitorRunReport:
    """Judge one day of the prediction log; write one row per tenant, once per run id.

    Args:
        registry: a :class:`Registry` or the root of an existing one.
        date: the day (default: the latest day in the log).
        run_id: default :func:`default_run_id`; a run id already written is not recomputed.
        settings: thresholds and knobs (default: the defaults; the CLI passes
            :meth:`MonitorSettings.from_env` of the environment it read).
        runner: how buckets run (default: Ray Data).

    Returns:
        The :class:`MonitorRunReport`.

    Raises:
        DataNotFound: no prediction log, or no rows on ``date``.
        ValidationError: a malformed date or run id.
        RegistryNotFound: no registry at ``registry``.
    """
    reg = registry if isinstance(registry, Registry) else Registry.open(registry)
    try:
        report = _run(reg, date, run_id, settings or MonitorSettings(), runner)
    except BaseException:
        _record(reg, "failed", None)
        raise
    uri = _record(reg, "already_done" if report.already_done else "ok", report)
    return MonitorRunReport(**{**report.__dict__, "metrics_file": uri})


def _run(reg: Registry, date: str | None, run_id: str | None, s: MonitorSettings,
         runner: Runner | None) -> MonitorRunReport:
    t0 = time.perf_counter()
    preds = DeltaAppender.for_registry(reg, PREDICTIONS)
    table = DeltaAppender.for_registry(reg, MONITORING)
    if preds.handle() is None:
        raise DataNotFound(f"no prediction log at {preds.uri} (model hosts write it while "
                           "serving with --log-sample above 0)")
    present = sorted(r["date"] for r in preds.sql("SELECT DISTINCT date FROM t").to_pylist())
    date = parse_date(date) if date else (present[-1] if present else None)
    run_id = validate_run_id(run_id or default_run_id(date or "none"))
    if table.app_version(monitor_app_id(run_id)) is not None:
        rows = table.sql(f"SELECT * FROM t WHERE run_id = {sql_str(run_id)}").to_pylist()
        return MonitorRunReport.from_rows(rows, run_id, already_done=True, table=table.uri,
                                          elapsed_s=time.perf_counter() - t0)
    if date is None or date not in present:
        span = f"{present[0]}..{present[-1]}" if present else "none"
        raise DataNotFound(f"the prediction log has no rows on {date or 'any day'} (days {span})")
    window = window_dates(date, s.volume_days + 1)
    earlier = tuple(d for d in window[:-1] if d in present)
    picks, volumes = _plan(_counts(preds, window), date, earlier, s)
    buckets = [MonitorBucket(i // s.tenants_per_bucket, tuple(picks[i:i + s.tenants_per_bucket]))
               for i in range(0, len(picks), s.tenants_per_bucket)]
    ctx = MonitorContext(reg, preds, date, s.min_rows)
    t_run = time.perf_counter()
    figures: dict[str, TenantFigures] = {}
    done = rows = 0
    for result in (runner or ray_runner(s))(ctx, buckets) if buckets else ():
        figures.update((f.tenant_id, f) for f in result.figures)
        done, rows = done + 1, rows + result.rows
        if s.progress:
            print(f"[monitor] bucket {done}/{len(buckets)}  tenants {len(figures)}/"
                  f"{len(picks)}  rows read {rows}", file=sys.stderr, flush=True)
    t_judge = time.perf_counter()
    judged = []
    for tenant, vol in volumes.items():
        fig = figures.get(tenant) or TenantFigures(tenant, None, Status.TOO_FEW_ROWS, 0)
        judged.append((fig, vol, judge(fig, vol, s)))
    out = monitoring_rows(run_id, date, judged, datetime.now(UTC))
    table.append(out, app_id=monitor_app_id(run_id))
    elapsed = time.perf_counter() - t0
    status = [f.status for f, _, _ in judged]
    return MonitorRunReport(
        run_id, date, len(judged), tuple(sorted(f.tenant_id for f, _, v in judged if v.flagged)),
        sum(v.rows for v in volumes.values()), status.count(Status.JUDGED),
        status.count(Status.TOO_FEW_ROWS), status.count(Status.NO_PROFILE), elapsed,
        table=table.uri, timings={"plan_s": t_run - t0, "buckets_s": t_judge - t_run,
                                  "write_s": time.perf_counter() - t_judge})
