"""One training bucket: read one shard's rows, train every tenant in it, stage artifacts.

This runs inside a Ray Data task (or in-process in tests). It reads only its own shard's
partitions of the window, writes each artifact straight to the registry, scores the current
production model on the same holdout for the gate, and returns small typed metadata only.
"""

from __future__ import annotations

import hashlib
import os
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np
import pyarrow.compute as pc

from registry import ModelVersion, Registry, StagedArtifact, shard_of
from training.errors import InvalidTrainingInput
from training.features import DATE_COLUMN, FEATURE_NAMES, LABEL_COLUMN, TENANT_COLUMN
from training.model import (
    HoldoutScore,
    ModelSpec,
    SkipReason,
    TenantSkipped,
    score,
    train_tenant,
)
from training.table import FeatureTable

__all__ = [
    "BucketResult",
    "BucketSpec",
    "JobContext",
    "Status",
    "TenantOutcome",
    "bucket_part",
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

    @property
    def holdout(self) -> HoldoutScore:
        """The new model's holdout score (trained outcomes only)."""
        m = dict(self.metrics)
        return HoldoutScore(auc=m["auc"], logloss=m["logloss"])


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


def bucket_part(tenant_id: str, parts: int) -> int:
    """Which part of its shard a tenant falls in (independent of the shard hash)."""
    if parts == 1:
        return 0
    digest = hashlib.blake2b(tenant_id.encode(), digest_size=8, person=b"tnt-part").digest()
    return int.from_bytes(digest, "big") % parts


def _score_production(reg: Registry, mv: ModelVersion, x: np.ndarray,
                      y: np.ndarray) -> tuple[HoldoutScore | None, str | None]:
    missing = [n for n in mv.feature_names if n not in FEATURE_NAMES]
    if missing:
        return None, f"features not in the data: {', '.join(missing[:3])}"
    try:
        cols = [FEATURE_NAMES.index(n) for n in mv.feature_names]
        return score(reg.load_booster(mv), x[:, cols], y), None
    except Exception as exc:  # noqa: BLE001 - any load/score error makes production unscorable
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _failure(tenant_id: str, exc: BaseException) -> TenantOutcome:
    last = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" at {last.filename.rsplit('/', 1)[-1]}:{last.lineno}" if last else ""
    return TenantOutcome(tenant_id, Status.FAILED, SkipReason.ERROR.value,
                         f"{type(exc).__name__}: {exc}{where}"[:500])


def _fit_one(ctx: JobContext, tenant_id: str, x: np.ndarray, y: np.ndarray,
             holdout: np.ndarray, production: ModelVersion | None) -> TenantOutcome:
    """Train and gate-score one tenant; the artifact is staged by the caller."""
    try:
        model = train_tenant(tenant_id, FEATURE_NAMES, x[~holdout], y[~holdout], x[holdout],
                             y[holdout], ctx.spec)
        prod_score, prod_error = (None, None)
        if production is not None:
            prod_score, prod_error = _score_production(ctx.registry, production, x[holdout],
                                                       y[holdout])
    except TenantSkipped as skip:
        return TenantOutcome(tenant_id, Status.SKIPPED, skip.reason.value, skip.detail)
    except Exception as exc:  # noqa: BLE001 - one tenant's failure must not sink the bucket
        return _failure(tenant_id, exc)
    return TenantOutcome(
        tenant_id, Status.TRAINED, model_bytes=model.model_bytes,
        metrics=tuple(sorted(model.metrics().items())),
        params=tuple(sorted(model.params.items())),
        production_version=production.version if production else None,
        production_score=prod_score, production_error=prod_error)


def _staged(outcome: TenantOutcome, write: Future[StagedArtifact] | None) -> TenantOutcome:
    if write is None:
        return outcome
    try:
        return replace(outcome, artifact=write.result(), model_bytes=b"")
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
    table = FeatureTable(ctx.data_path).read_shard(bucket.shard, ctx.dates)
    n_rows = table.num_rows
    # Group by tenant through dictionary codes: sorting small ints beats sorting strings.
    encoded = pc.dictionary_encode(table.column(TENANT_COLUMN)).combine_chunks()
    names = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    x = np.column_stack([table.column(n).to_numpy(zero_copy_only=False).astype(np.float64)
                         for n in FEATURE_NAMES]) if n_rows else np.empty((0, 0))
    y = table.column(LABEL_COLUMN).to_numpy(zero_copy_only=False).astype(np.int8)
    is_holdout = pc.equal(table.column(DATE_COLUMN), ctx.date).to_numpy(zero_copy_only=False)
    del table
    by_name = np.argsort(names.astype(str), kind="stable")  # tenants in id order
    order = np.argsort(np.argsort(by_name)[codes], kind="stable")
    names = names[by_name]
    bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(names))[by_name])])
    read_s = time.perf_counter() - t0
    production = {mv.tenant_id: mv for mv in bucket.production}
    fitted: list[tuple[TenantOutcome, Future[StagedArtifact] | None]] = []
    # Artifact writes (fsync) wait on the disk, not the CPU: a writer thread overlaps them
    # with training the next tenant.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stage-artifacts")
    try:
        for k, tenant_id in enumerate(names.tolist()):
            if bucket_part(tenant_id, bucket.parts) != bucket.part:
                continue
            if shard_of(tenant_id, ctx.num_shards) != bucket.shard:
                raise InvalidTrainingInput(
                    f"tenant {tenant_id!r} is stored in shard {bucket.shard} but hashes to "
                    f"{shard_of(tenant_id, ctx.num_shards)} of {ctx.num_shards}: the feature "
                    "table was laid out with another shard count")
            idx = order[bounds[k]:bounds[k + 1]]
            outcome = _fit_one(ctx, tenant_id, x[idx], y[idx], is_holdout[idx],
                               production.get(tenant_id))
            write = writer.submit(ctx.registry.stage_artifact, tenant_id, outcome.model_bytes,
                                  ctx.run_id) if outcome.status is Status.TRAINED else None
            fitted.append((outcome, write))
        outcomes = [_staged(outcome, write) for outcome, write in fitted]
    finally:
        writer.shutdown(wait=True)
    return BucketResult(bucket.shard, bucket.part, tuple(outcomes), rows=n_rows,
                        read_s=read_s, train_s=time.perf_counter() - t0 - read_s,
                        started_at=started_at, pid=os.getpid(),
                        cpu_s=time.process_time() - cpu0)
