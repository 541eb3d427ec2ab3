"""The nightly job: train one model per tenant on Ray Data and publish the run in one commit.

Flow (the driver only ever holds per-tenant metadata, never rows)::

    spec (a file, or the default spec of the synthetic table) checked against the table
    plan buckets: a sharded table from its Delta log (one per shard, or per shard part),
    any other table as N scan buckets (each keeps the tenants that hash to it); biggest first
      -> Ray Data: from_items(buckets).map(train_bucket)   # no shuffle: a task reads its shard
      -> per-tenant outcomes stream back (progress on stderr)
      -> promotion gate per trained tenant (production vs new on the same holdout)
      -> registry.publish(run_id, versions, aliases, run record)   # one commit, idempotent
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from registry import AliasMove, Registry, validate_run_id
from registry.leases import LeaseKeeper
from training.bucket import (
    BucketResult,
    BucketSpec,
    JobContext,
    Status,
    TenantOutcome,
    train_bucket,
)
from training.checks import registered_checks
from training.cluster import ensure_ray, quiet_unthrottled_data_context
from training.errors import DataNotFound
from training.gate import Decision, decide
from training.generate import default_spec
from training.parts import bucket_part
from training.progress import Progress, make_progress
from training.report import TenantFailure, TrainingReport
from training.resolve import RunPlan, resolve
from training.settings import TrainingSettings
from training.source import Layout, TableSource
from training.spec import SpecError, TrainingSpec
from training.table import parse_date, window_dates
from training.versions import new_version, run_details

__all__ = ["LEASE_RENEW_S", "LEASE_TTL_S", "default_run_id", "plan_buckets", "run_training"]

LEASE_TTL_S = 600.0
"""How long the run's registry lease outlives the driver's last renewal (gc waits that long
before it may collect what a crashed run staged)."""
LEASE_RENEW_S = 30.0
"""How often the driver renews the lease while the run lasts."""


def default_run_id(date: str) -> str:
    """The run id used when none is given: one run per data date, so a retry resumes it."""
    return f"train-{date}"


def plan_buckets(source: TableSource, dates: tuple[str, ...], reg: Registry,
                 parts: int) -> list[BucketSpec]:
    """One bucket per (shard, part) with rows in the window -- or, for a table that is not
    laid out by shard, ``parts`` scan buckets -- largest first.

    Largest-first keeps the last wave of tasks short, so no CPU idles at the end.

    Args:
        source: the input table.
        dates: the window.
        reg: the registry (production versions are attached to their bucket).
        parts: buckets per shard (a scan: buckets in all).

    Returns:
        The bucket specs.
    """
    counts = source.row_counts(dates)
    scan = source.layout is Layout.SCAN
    production: dict[tuple[int, int], list[Any]] = {}
    for tenant_id, mv in reg.production_versions().items():
        key = (-1 if scan else reg.shard_of(tenant_id), bucket_part(tenant_id, parts))
        production.setdefault(key, []).append(mv)
    specs = [BucketSpec(shard, part, parts, rows // parts, tuple(production.get((shard, part), ())))
             for shard, rows in counts.items() if rows > 0 for part in range(parts)]
    return sorted(specs, key=lambda b: (-b.est_rows, b.shard, b.part))


@dataclass(frozen=True)
class _BucketFn:
    """The Ray Data map function: a picklable callable around :func:`train_bucket`."""

    ctx: JobContext

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        # Typed values travel as explicit pickles: Arrow cannot hold dataclasses natively.
        return {"result": pickle.dumps(train_bucket(self.ctx, pickle.loads(row["bucket"])))}


def _run_buckets(ctx: JobContext, buckets: list[BucketSpec],
                 resources: dict[str, float]) -> Iterator[BucketResult]:
    import ray.data

    remote_args: dict[str, Any] = {"num_cpus": 1}
    if resources:  # placement: only nodes offering these (e.g. training=1) run buckets
        remote_args["resources"] = resources
    with quiet_unthrottled_data_context():
        items = ray.data.from_items([{"bucket": pickle.dumps(b)} for b in buckets],
                                    override_num_blocks=len(buckets))
        for row in items.map(_BucketFn(ctx), **remote_args).iter_rows():
            yield pickle.loads(row["result"])


def _halt(settings: TrainingSettings) -> None:
    """Crash-test hook: announce, then wait to be killed before anything is published."""
    if settings.halt_marker:
        with open(settings.halt_marker, "w", encoding="utf-8") as fh:
            fh.write(str(os.getpid()))
    time.sleep(600)
    raise SystemExit("halted before publishing (halt_after_buckets)")


def _infer_classes(plan: RunPlan, dates: tuple[str, ...], name: str) -> RunPlan:
    """A multiclass plan with ``num_class`` = the largest label in the window + 1."""
    if plan.objective != "multiclass" or plan.model.num_class:
        return plan
    top = plan.source.column_max(plan.data.label_column, dates)
    if top is None or top < 1 or top != int(top):
        raise SpecError(name, [(f"label_column: cannot infer num_class from the labels "
                               f"(largest label {top}); labels are class ids 0..K-1, or "
                               "set num_class")])
    return replace(plan, model=replace(plan.model, num_class=int(top) + 1))


def run_training(data_path: str | None, registry: Registry | str, *, date: str | None = None,
                 run_id: str | None = None, settings: TrainingSettings | None = None,
                 progress: Progress | None = None, spec: TrainingSpec | None = None,
                 spec_name: str = "<spec>",
                 storage_options: Mapping[str, str] | None = None) -> TrainingReport:
    """Train and publish one model per tenant for ``date``; idempotent per ``run_id``.

    Args:
        data_path: the input table (Delta or Parquet); default the spec's ``table``.
        registry: a :class:`Registry` or the root of an existing one (only ``tenantry
            registry init`` / :meth:`Registry.create` create registries).
        date: the run's date (the window's last day); default the latest date in the table.
        run_id: default ``train-<date>``; re-running a published run id does nothing, and
            re-running an interrupted one resumes it without duplicate versions.
        settings: job settings (default: :class:`TrainingSettings`' defaults).
        progress: where to report finished buckets (default per ``settings.progress``).
        spec: the training spec (default :func:`~training.spec.default_spec`: the synthetic
            table with ``settings``' model parameters, as before specs existed).
        spec_name: how to name the spec in errors (its file).
        storage_options: object-store options of a ``registry`` given as a root.

    Returns:
        The :class:`TrainingReport`.

    Raises:
        DataNotFound: no table at the path or no rows on ``date``.
        SpecError: the spec does not fit the table (one line per problem).
        InvalidTrainingInput: a malformed date or a table/registry shard mismatch (checked
            before anything is staged).
        RegistryNotFound: no registry at ``registry``.
        ValidationError: a malformed run id.
    """
    settings = settings or TrainingSettings()
    t0 = time.perf_counter()
    if spec is None:
        if data_path is None:
            raise DataNotFound("no feature table given (pass --data or a spec with a table)")
        spec = default_spec(data_path, settings)
        spec_name = "(the synthetic table's default; for your own table pass --spec FILE)"
    source = TableSource.open(data_path or spec.table, spec.format, spec.time_column,
                              spec.tenant_column)
    plan = resolve(spec, source, spec_name)
    date, present = _run_date(source, date)
    run_id = validate_run_id(run_id or default_run_id(date))
    dates = tuple(d for d in window_dates(date, plan.window_days) if d in present)
    reg = registry if isinstance(registry, Registry) else Registry.open(registry, storage_options)
    source.check_layout(reg.num_shards)
    if reg.is_published(run_id):
        return TrainingReport(run_id, date, 0, 0, 0, 0, 0, 0, 0.0, time.perf_counter() - t0,
                              already_published=True, window=dates)
    plan = _infer_classes(plan, dates, spec_name)
    # Held from before the first claim until the run is published or fails, so gc leaves
    # its staged artifacts and the production models it scores against alone.
    lease = LeaseKeeper(reg.leases, run_id, LEASE_TTL_S, LEASE_RENEW_S).start()
    try:
        return _train_and_publish(plan, reg, run_id, date, dates, settings, progress, lease,
                                  t0)
    finally:
        lease.stop()


def _run_date(source: TableSource, date: str | None) -> tuple[str, list[str]]:
    """The run's date (``date``, else the table's latest) and the table's dates; raises
    DataNotFound when the table has no rows on it."""
    present = source.dates()
    chosen = parse_date(date) if date else (present[-1] if present else None)
    if chosen is None or chosen not in present:
        raise DataNotFound(f"feature table {source.path!r} has no rows on {chosen or 'any day'} "
                           f"(dates {present[0] if present else '-'}..{present[-1] if present else '-'})")
    return chosen, list(present)


def _train_buckets(ctx: JobContext, buckets: list[BucketSpec], settings: TrainingSettings,
                   progress: Progress | None
                   ) -> tuple[list[TenantOutcome], dict[Status, int], float, float]:
    """Run the buckets, reporting progress: the outcomes, counts by status, and the tasks'
    wall and CPU seconds."""
    progress = progress or make_progress(settings.progress)
    progress.start(len(buckets))
    outcomes: list[TenantOutcome] = []
    done, task_s, task_cpu_s = 0, 0.0, 0.0
    counts = {s: 0 for s in Status}
    try:
        for result in _run_buckets(ctx, buckets, settings.resources()):
            outcomes.extend(result.outcomes)
            task_s += result.read_s + result.train_s
            task_cpu_s += result.cpu_s
            for o in result.outcomes:
                counts[o.status] += 1
            done += 1
            progress.bucket_done(counts[Status.TRAINED], counts[Status.SKIPPED],
                                 counts[Status.FAILED])
            if settings.halt_after_buckets and done >= settings.halt_after_buckets:
                _halt(settings)
    finally:
        progress.close()
    return outcomes, counts, task_s, task_cpu_s


def _gated(outcomes: list[TenantOutcome], plan: RunPlan, date: str, dates: tuple[str, ...]
           ) -> tuple[list[Any], list[AliasMove], list[TenantFailure]]:
    """The new versions and alias moves the gate decides for the trained tenants, and the
    tenants that were not trained."""
    versions: list[Any] = []
    moves: list[AliasMove] = []
    failures: list[TenantFailure] = []
    for o in sorted(outcomes, key=lambda o: o.tenant_id):
        if o.status is not Status.TRAINED or o.artifact is None:
            failures.append(TenantFailure(o.tenant_id, o.reason, o.detail, o.status.value))
            continue
        gate = decide(o.holdout, o.production_score, production_error=o.production_error,
                      rule=plan.gate)
        metrics = dict(o.metrics)
        if o.production_score is not None:
            metrics.update({f"production_{k}": v
                            for k, v in o.production_score.as_dict().items()})
        checked: dict[str, Any] = dict(o.checks)  # NewVersion fields (CHECK_COLUMNS)
        versions.append(replace(new_version(o, plan, metrics, date, dates, gate.decision.value),
                                profile=o.profile, **checked))
        moves.append(AliasMove(o.tenant_id, gate.decision.value, o.artifact.version, gate.reason))
    return versions, moves, failures


def _train_and_publish(plan: RunPlan, reg: Registry, run_id: str, date: str,
                       dates: tuple[str, ...], settings: TrainingSettings,
                       progress: Progress | None, lease: LeaseKeeper,
                       t0: float) -> TrainingReport:
    scan = plan.source.layout is Layout.SCAN
    parts = settings.scan_parts() if scan else settings.buckets_per_shard
    buckets = plan_buckets(plan.source, dates, reg, parts)
    pins: dict[str, list[int]] = {}
    for bucket in buckets:
        for mv in bucket.production:
            pins.setdefault(mv.tenant_id, []).append(mv.version)
    lease.pin(pins)
    # The registered checks ride in the context: a Ray worker has not run the code that
    # registered them.
    ctx = JobContext(plan.source.path, reg, run_id, date, dates, reg.num_shards, plan.model,
                     plan.data, plan.source, registered_checks())
    t_ray = time.perf_counter()
    ensure_ray(settings.ray_address, settings.num_cpus)
    t_train = time.perf_counter()
    outcomes, counts, task_s, task_cpu_s = _train_buckets(ctx, buckets, settings, progress)
    train_s = time.perf_counter() - t_train
    versions, moves, failures = _gated(outcomes, plan, date, dates)
    promoted = sum(m.alias == Decision.PRODUCTION.value for m in moves)
    shadowed = sum(m.alias == Decision.SHADOW.value for m in moves)
    elapsed = time.perf_counter() - t0
    trained = counts[Status.TRAINED]
    report = TrainingReport(
        run_id, date, trained, counts[Status.SKIPPED], counts[Status.FAILED], len(versions),
        promoted,
        shadowed, trained / max(elapsed, 1e-9), elapsed, window=dates, buckets=len(buckets),
        failures=tuple(failures), timings={"train_s": train_s},
        details=run_details(plan, outcomes))
    t_pub = time.perf_counter()
    published = reg.publish(run_id, versions, moves, run_record=report.to_json(max_failures=1000))
    elapsed = time.perf_counter() - t0
    return TrainingReport(
        run_id, date, trained, report.skipped, report.failed, published.published, promoted,
        shadowed, trained / max(elapsed, 1e-9), elapsed,
        already_published=published.already_published, window=dates, buckets=len(buckets),
        failures=tuple(failures), details=report.details,
        timings={"ray_init_s": t_train - t_ray, "train_s": train_s,
                 "publish_s": time.perf_counter() - t_pub, "bucket_tasks_s": task_s,
                 "bucket_tasks_cpu_s": task_cpu_s})
