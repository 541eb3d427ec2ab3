"""The scoring job: a day of the feature table scored on Ray Data, published in one commit.

Flow (the driver holds per-bucket metadata only, never rows)::

    feature table at version V (pinned in the run's record, so a resumed run reads the same)
      -> plan: one bucket per shard (x part) with rows that day, biggest first, each with
         its tenants' production (and shadow) versions from the registry snapshot
      -> Ray Data: from_items(buckets).map(score_bucket)   # no shuffle: a bucket reads its
         shard; one block (task) of buckets per CPU, about equal rows each
      -> each task stages one Parquet file + a manifest in the output table's directory
      -> one Delta commit adding every file, marked tenantry-score-<run_id>

Re-running a published run id does nothing; re-running a killed one reuses the buckets
its manifests record and scores only the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from engine.batch.output import OutputTable
from engine.batch.plan import (
    DataSource,
    ModelPair,
    ScoreBucket,
    model_pairs,
    open_source,
    plan_buckets,
)
from engine.batch.report import ScoreReport
from engine.batch.runner import Runner, ray_runner, run_buckets
from engine.batch.scan import open_spec_source
from engine.batch.settings import ScoreSettings
from engine.batch.task import BucketResult, ScoreContext
from engine.serving.model import MULTICLASS
from registry import Alias, Registry, validate_run_id
from registry.errors import Conflict, ValidationError
from registry.leases import LeaseKeeper
from training.errors import DataNotFound
from training.spec import TrainingSpec
from training.table import FeatureTable, parse_date

__all__ = ["LEASE_RENEW_S", "LEASE_TTL_S", "Runner", "default_run_id", "ray_runner",
           "run_scoring"]

LEASE_TTL_S = 600.0
LEASE_RENEW_S = 30.0

def default_run_id(date: str, alias: str = "production") -> str:
    """``score-<date>`` (``score-<date>-shadow`` with the shadow alias): a retry resumes it."""
    return f"score-{date}" + ("-shadow" if alias == Alias.SHADOW.value else "")


def run_scoring(data_path: str | None, registry: Registry | str, out: str, *,
                date: str | None = None, alias: str = "production", run_id: str | None = None,
                row_key: str | None = None, settings: ScoreSettings | None = None,
                runner: Runner | None = None, spec: TrainingSpec | None = None,
                storage_options: Mapping[str, str] | None = None) -> ScoreReport:
    """Score one day of ``data_path`` with every tenant's model; publish to ``out`` once.

    Args:
        data_path: the feature table (Delta, partitioned by shard and date); with ``spec``,
            default the spec's table, read as the spec says.
        registry: a :class:`Registry` or the root of an existing one.
        out: the predictions table (created on the first run).
        date: the day to score; default the latest in the table.
        alias: ``production``, or ``shadow`` to also score each tenant's shadow version.
        run_id: default :func:`default_run_id`; a published id is a no-op, a killed one resumes.
        row_key: the row-identity column (default ``row_id`` if present, else ordinals).
        settings: job settings (default: :class:`ScoreSettings`' defaults).
        runner: how buckets run (default: Ray Data).
        spec: a training spec: the table's tenant and time columns (and format); a table
            not laid out by shard and date is scanned (:mod:`engine.batch.scan`).
        storage_options: object-store options of a ``registry`` given as a root.

    Returns:
        The :class:`ScoreReport`.

    Raises:
        DataNotFound: no table at ``data_path`` or no rows on ``date``.
        ValidationError: a malformed date, alias or run id, or a table laid out for another
            shard count.
        Conflict: the run id was started with other parameters, or ``out`` has other columns.
        RegistryNotFound: no registry at ``registry``.
    """
    settings = settings or ScoreSettings()
    t0 = time.perf_counter()
    try:
        alias = Alias.parse(alias).value
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    if data_path is None and spec is None:
        raise ValidationError("score needs --data PATH or --spec FILE")
    data_path = data_path or spec.table  # type: ignore[union-attr]  # one of them is set
    reg = registry if isinstance(registry, Registry) else Registry.open(registry, storage_options)

    def source(version: int | None = None) -> DataSource:
        if spec is not None:
            return open_spec_source(spec, data_path, version, row_key)
        return open_source(data_path, version, row_key)

    src = source()
    pairs = model_pairs(reg, alias == "shadow")
    output = _output_table(out, src, pairs)
    prior = output.run_record(validate_run_id(run_id)) if run_id else None
    date = parse_date(date) if date else (prior["date"] if prior else _latest(src))
    run_id = validate_run_id(run_id or default_run_id(date, alias))
    stored = output.published(run_id)
    if stored is not None:
        return replace(ScoreReport.from_json({**stored, "run_id": run_id, "output": out}),
                       already_published=True, elapsed_s=time.perf_counter() - t0)
    run = _Run(reg, output, data_path, date, alias, run_id, t0)
    return _score_day(run, settings, runner, source, src, pairs)


@dataclass(frozen=True)
class _Run:
    """What one scoring run was asked for, resolved."""

    reg: Registry
    output: OutputTable
    data_path: str
    date: str
    alias: str
    run_id: str
    t0: float  # when it started (perf_counter)


def _score_day(run: _Run, settings: ScoreSettings, runner: Runner | None,
               source: Callable[[int | None], DataSource], src: DataSource,
               pairs: dict[str, ModelPair]) -> ScoreReport:
    """Record (or resume) the run, score its buckets and publish them in one commit.

    ``src`` is the table as opened at the start; a resumed run reopens it (``source``) at
    the version its first attempt read.
    """
    reg, output, run_id, date = run.reg, run.output, run.run_id, run.date
    output.check_compatible()
    params = {"run_id": run_id, "date": date, "alias": run.alias, "data": run.data_path,
              "data_version": src.version, "row_key": src.key_field.name,
              "parts": settings.buckets_per_shard}
    prior = _attempt(output, run_id, params)
    if prior is not params:  # a killed attempt: read the table as it read it
        src = source(int(prior["data_version"]))
    if date not in src.dates():
        raise DataNotFound(f"feature table {run.data_path!r} has no rows on {date}")
    if src.scan is None:
        FeatureTable(run.data_path).check_shards(reg.num_shards)
    done = output.manifests(run_id)
    buckets = plan_buckets(src.shard_files(date, reg.num_shards), pairs, reg.num_shards,
                           int(prior["parts"]), done)
    ctx = ScoreContext(run_id, date, src, reg, output, run.alias == "shadow")
    # gc keeps the versions this run scores with while it lasts (and a TTL after a crash).
    lease = LeaseKeeper(reg.leases, f"score-{run_id}", LEASE_TTL_S, LEASE_RENEW_S).start()
    try:
        lease.pin(_pins(buckets))
        results = [BucketResult.from_manifest(doc) for doc in done.values()]
        t_run = time.perf_counter()
        if buckets:
            run_buckets(settings, runner or ray_runner(settings), ctx, buckets, results)
        timings = {"buckets_s": time.perf_counter() - t_run, "plan_s": t_run - run.t0}
        return _publish(output, run_id, date, run.alias, src, results, len(done), run.t0,
                        timings)
    finally:
        lease.stop()


def _attempt(output: OutputTable, run_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """The run's recorded parameters: ``params``, recorded now, on its first attempt.

    Raises:
        Conflict: an earlier attempt of ``run_id`` had other parameters.
    """
    prior = output.run_record(run_id)
    if prior is None:
        output.record_run(run_id, params)
        return params
    _check_same(run_id, prior, params)
    return prior


def _output_table(out: str, src: DataSource, pairs: dict[str, ModelPair]) -> OutputTable:
    """The predictions table, with the class-probability columns when a version the run
    scores with predicts classes or the table already has them."""
    output = OutputTable(out, src.key_field)
    if output.has_class_scores() or any(mv is not None and mv.objective == MULTICLASS
                                        for p in pairs.values()
                                        for mv in (p.production, p.shadow)):
        output = OutputTable(out, src.key_field, class_scores=True)
    return output


def _latest(src: DataSource) -> str:
    dates = src.dates()
    if not dates:
        raise DataNotFound(f"feature table at {src.path!r} has no rows")
    return dates[-1]


def _check_same(run_id: str, prior: dict[str, Any], params: dict[str, Any]) -> None:
    for key in ("date", "alias", "data", "row_key"):
        if prior.get(key) != params[key]:
            raise Conflict(f"run {run_id!r} was started with {key}={prior.get(key)!r}, not "
                           f"{params[key]!r}: re-run it as it was, or use another --run-id")


def _pins(buckets: list[ScoreBucket]) -> dict[str, list[int]]:
    pins: dict[str, list[int]] = {}
    for bucket in buckets:
        for pair in bucket.models:
            for mv in (pair.production, pair.shadow):
                if mv is not None:
                    pins.setdefault(mv.tenant_id, []).append(mv.version)
    return pins


def _publish(output: OutputTable, run_id: str, date: str, alias: str, src: DataSource,
             results: list[BucketResult], resumed: int, t0: float,
             timings: dict[str, float]) -> ScoreReport:
    """Commit every bucket's file at once; the report goes into the commit's metadata."""
    results.sort(key=lambda r: (r.shard, r.part))
    rows = sum(r.rows for r in results)
    failed = tuple(sorted((f for r in results for f in r.failed), key=lambda f: f.tenant_id))
    shadow_failed = tuple(sorted((f for r in results for f in r.shadow_failed),
                                 key=lambda f: f.tenant_id))
    for name in ("read_s", "load_s", "score_s", "write_s", "cpu_s"):
        timings[f"tasks_{name}"] = sum(r.timings.get(name, 0.0) for r in results)

    def report(table_version: int | None) -> ScoreReport:
        elapsed = time.perf_counter() - t0
        return ScoreReport(
            run_id, date, rows, sum(r.tenants for r in results), failed,
            rows / max(elapsed, 1e-9), output.path, elapsed, alias=alias, buckets=len(results),
            resumed_buckets=resumed, shadow_tenants=sum(r.shadow_tenants for r in results),
            shadow_failed=shadow_failed, invalid_rows=sum(r.invalid_rows for r in results),
            row_key=src.key_field.name, data_version=src.version, table_version=table_version,
            timings=dict(timings))

    t_commit = time.perf_counter()
    version = output.commit(run_id, [r.file for r in results if r.file is not None],
                            report(None).to_json(max_failures=1000))
    timings["commit_s"] = time.perf_counter() - t_commit
    if version is None:  # another process published this run id first
        stored = output.published(run_id) or {}
        return replace(ScoreReport.from_json({**report(None).to_json(), **stored}),
                       already_published=True)
    output.clean_staging(run_id)
    return report(version)
