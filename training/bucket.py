"""One training bucket: read one shard's rows, train every tenant in it, stage artifacts.

This runs inside a Ray Data task (or in-process in tests). It reads only its own rows of the
window (its shard's files of a sharded table; its tenants of a scanned one, see
:mod:`training.source`), writes each artifact straight to the registry, scores the current
production model on the same holdout for the gate, and returns small typed metadata only.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from registry import ModelVersion, Registry, StagedArtifact, shard_of
from registry.types import ModelProfile
from training.checks import ArtifactCheck
from training.errors import InvalidTrainingInput
from training.features import FEATURE_NAMES  # noqa: F401 - the default features, read by tests
from training.frame import BucketRows, DataSpec, TenantData, design, tenant_data
from training.model import (
    HoldoutScore,
    ModelSpec,
    SkipReason,
    TenantSkipped,
    score,
    train_tenant,
)
from training.parts import bucket_part
from training.source import Layout, TableSource
from training.table import window_dates

__all__ = [
    "BucketResult",
    "BucketSpec",
    "JobContext",
    "Status",
    "TenantOutcome",
    "train_bucket",
]


class Status(str, Enum):
    """What happened to one tenant."""

    TRAINED = "trained"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class BucketSpec:
    """A unit of work: part ``part`` of ``parts`` of one data shard, plus its production models."""

    shard: int
    """The registry shard (-1: a scan bucket, whose tenants may be in any shard)."""
    part: int = 0
    parts: int = 1
    est_rows: int = 0
    production: tuple[ModelVersion, ...] = ()


@dataclass(frozen=True)
class JobContext:
    """What every bucket of one run shares."""

    data_path: str
    registry: Registry
    run_id: str
    date: str
    dates: tuple[str, ...]
    num_shards: int
    spec: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    source: TableSource | None = None
    """The input table (default: the sharded Delta table at ``data_path``)."""
    checks: tuple[ArtifactCheck, ...] = ()
    """Run on every trained artifact (:mod:`training.checks`); travel to the tasks with
    the context, pickled by reference."""

    def table(self) -> TableSource:
        """The input table."""
        return self.source or TableSource(self.data_path, "delta", Layout.SHARDED,
                                          self.data.time_column)

    def holdout_days(self) -> tuple[str, ...]:
        """The days a day-based holdout rule holds out (the window's last N)."""
        return window_dates(self.date, self.data.holdout.last_n_days)


@dataclass(frozen=True)
class TenantOutcome:
    """One tenant's result, small enough to send back to the driver."""

    tenant_id: str
    status: Status
    reason: str = ""
    detail: str = ""
    artifact: StagedArtifact | None = None
    model_bytes: bytes = field(default=b"", repr=False)
    """The UBJSON artifact between training and staging (emptied once staged)."""
    metrics: tuple[tuple[str, float], ...] = ()
    params: tuple[tuple[str, object], ...] = ()
    production_version: int | None = None
    production_score: HoldoutScore | None = None
    production_error: str | None = None
    feature_names: tuple[str, ...] = ()
    """The features the model was trained on, in model order."""
    categories: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Per categorical feature, the categories the model knows."""
    dropped: tuple[str, ...] = ()
    """Features left out because the tenant never sent them (``missing_features: drop``)."""
    profile: ModelProfile | None = None
    """The new model's reference profile (published with it, for drift monitoring)."""
    checks: tuple[tuple[str, str | None], ...] = ()
    """Index columns the artifact checks recorded (e.g. ``forest_check``)."""
    files: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)
    """Files the artifact checks wrote, staged beside the artifact (emptied once staged)."""

    @property
    def holdout(self) -> HoldoutScore:
        """The new model's holdout score (trained outcomes only)."""
        m = dict(self.metrics)
        return HoldoutScore(**{k: m[k] for k in HoldoutScore.__dataclass_fields__ if k in m})


@dataclass(frozen=True)
class BucketResult:
    """Everything one bucket sends back."""

    shard: int
    part: int
    outcomes: tuple[TenantOutcome, ...]
    rows: int
    read_s: float
    train_s: float
    started_at: float = 0.0
    pid: int = 0
    cpu_s: float = 0.0


def _model_info(booster: Any) -> tuple[str, dict[str, tuple[str, ...]]]:
    """A booster's objective and, per categorical feature, the categories it knows."""
    objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    cats = booster.get_categories(export_to_arrow=True).to_arrow()
    return objective, {name: tuple(arr.to_pylist()) for name, arr in cats if arr is not None}


def _score_production(ctx: JobContext, mv: ModelVersion, rows: BucketRows,
                      data: TenantData) -> tuple[HoldoutScore | None, str | None]:
    missing = [n for n in mv.feature_names if n not in ctx.data.feature_names]
    if missing:
        return None, f"features not in the data: {', '.join(missing[:3])}"
    try:
        booster = ctx.registry.load_booster(mv)
        objective, categories = _model_info(booster)
        if objective != ctx.spec.objective:
            return None, f"production is {objective}, this run trains {ctx.spec.objective}"
        x = design(rows, data.holdout_idx, tuple(mv.feature_names), categories)
        return score(booster, x, data.y_holdout, objective), None
    except Exception as exc:  # noqa: BLE001 - any load/score error makes production unscorable
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _failure(tenant_id: str, exc: BaseException) -> TenantOutcome:
    last = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" at {last.filename.rsplit('/', 1)[-1]}:{last.lineno}" if last else ""
    return TenantOutcome(tenant_id, Status.FAILED, SkipReason.ERROR.value,
                         f"{type(exc).__name__}: {exc}{where}"[:500])


def _fit_one(ctx: JobContext, tenant_id: str, rows: BucketRows, idx: Any,
             production: ModelVersion | None) -> TenantOutcome:
    """Train and gate-score one tenant; the artifact is staged by the caller."""
    try:
        data = tenant_data(rows, idx)
        model = train_tenant(tenant_id, data.feature_names, data.x_train, data.y_train,
                             data.x_holdout, data.y_holdout, ctx.spec, ctx.checks)
        prod_score, prod_error = (None, None)
        if production is not None:
            prod_score, prod_error = _score_production(ctx, production, rows, data)
    except TenantSkipped as skip:
        return TenantOutcome(tenant_id, Status.SKIPPED, skip.reason.value, skip.detail)
    except Exception as exc:  # noqa: BLE001 - one tenant's failure must not sink the bucket
        return _failure(tenant_id, exc)
    metrics = model.metrics()
    if data.unlabelled:
        metrics["n_unlabelled"] = float(data.unlabelled)
    return TenantOutcome(
        tenant_id, Status.TRAINED, model_bytes=model.model_bytes,
        metrics=tuple(sorted(metrics.items())),
        params=tuple(sorted(model.params.items())),
        production_version=production.version if production else None,
        production_score=prod_score, production_error=prod_error,
        feature_names=model.feature_names, categories=tuple(sorted(model.categories.items())),
        dropped=data.dropped, profile=model.profile,
        checks=tuple(sorted(model.checks.items())), files=tuple(sorted(model.files.items())))


def _staged(outcome: TenantOutcome, write: Future[StagedArtifact] | None) -> TenantOutcome:
    if write is None:
        return outcome
    try:
        return replace(outcome, artifact=write.result(), model_bytes=b"", files=())
    except Exception as exc:  # noqa: BLE001 - a failed write fails this tenant only
        return _failure(outcome.tenant_id, exc)


def train_bucket(ctx: JobContext, bucket: BucketSpec) -> BucketResult:
    """Train every tenant of one bucket.

    Args:
        ctx: the run's shared context.
        bucket: which shard (part) to train, with its tenants' production versions.

    Returns:
        A :class:`BucketResult` with one outcome per tenant found in the bucket's rows.

    Raises:
        InvalidTrainingInput: the table's ``shard`` column disagrees with ``ctx.num_shards``.
        Exception: reading the shard failed (the job fails; re-running resumes).
    """
    started_at, t0, cpu0 = time.time(), time.perf_counter(), time.process_time()
    d = ctx.data
    columns = [d.tenant_column, *d.feature_names, d.label_column]
    table = ctx.table().read(bucket.shard, bucket.part, bucket.parts, ctx.dates, columns,
                             time_key=d.holdout.fraction is not None)
    n_rows = table.num_rows
    rows = BucketRows.from_arrow(table, d, ctx.holdout_days())
    del table
    scan = ctx.table().layout is Layout.SCAN
    read_s = time.perf_counter() - t0
    production = {mv.tenant_id: mv for mv in bucket.production}
    fitted: list[tuple[TenantOutcome, Future[StagedArtifact] | None]] = []
    # Artifact writes (fsync) wait on the disk, not the CPU: a writer thread overlaps them
    # with training the next tenant.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stage-artifacts")
    try:
        for tenant_id, idx in zip(rows.tenants, rows.groups, strict=True):
            if not scan and bucket_part(tenant_id, bucket.parts) != bucket.part:
                continue
            if not scan and shard_of(tenant_id, ctx.num_shards) != bucket.shard:
                raise InvalidTrainingInput(
                    f"tenant {tenant_id!r} is stored in shard {bucket.shard} but hashes to "
                    f"{shard_of(tenant_id, ctx.num_shards)} of {ctx.num_shards}: the feature "
                    "table was laid out with another shard count")
            outcome = _fit_one(ctx, tenant_id, rows, idx, production.get(tenant_id))
            write = writer.submit(ctx.registry.stage_artifact, tenant_id, outcome.model_bytes,
                                  ctx.run_id, dict(outcome.files)) \
                if outcome.status is Status.TRAINED else None
            fitted.append((outcome, write))
        outcomes = [_staged(outcome, write) for outcome, write in fitted]
    finally:
        writer.shutdown(wait=True)
    return BucketResult(bucket.shard, bucket.part, tuple(outcomes), rows=n_rows,
                        read_s=read_s, train_s=time.perf_counter() - t0 - read_s,
                        started_at=started_at, pid=os.getpid(),
                        cpu_s=time.process_time() - cpu0)
