"""One scoring bucket: read one shard's rows of the day, score every tenant, stage a file.

This runs inside a Ray Data task (or in-process in tests). It reads only its own shard's
files (or scans the day for its tenants, :mod:`engine.batch.scan`), loads each tenant's
model(s) once through the registry (sha256 verified, compiled as serving compiles them),
predicts, writes one Parquet file into the output table's directory plus its manifest,
and returns small typed metadata. A tenant that cannot be scored is recorded with its
reason; the others are scored regardless.

Scores are what serving answers: a probability (binary), a value (regression) or, for a
multi-class model, K class probabilities in the ``scores`` list column (``score`` null).
A categorical feature's text column is coded with the model's categories (one it never
saw is missing), as serving codes a request's strings.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.batch.columns import BucketColumns
from engine.batch.output import OutputTable, StagedFile, staged_from_json, staged_to_json
from engine.batch.plan import DataSource, ModelPair, ScoreBucket
from engine.batch.predict import Request, Scored, score_requests
from engine.batch.report import FailureReason, TenantFailure
from engine.batch.rows import ScoredTenant, output_rows
from engine.batch.scan import read_scan
from engine.serving.model import LoadedModel, load_models
from registry import ModelVersion, Registry, shard_of
from registry.errors import ChecksumMismatch, TenantryError
from training.features import DATE_COLUMN, SHARD_COLUMN
from training.parts import bucket_part

__all__ = ["BucketResult", "ScoreContext", "score_bucket"]


@dataclass(frozen=True)
class ScoreContext:
    """What every bucket of one run shares (pickled once per task)."""

    run_id: str
    date: str
    source: DataSource
    registry: Registry
    output: OutputTable
    shadow: bool


@dataclass(frozen=True)
class BucketResult:
    """What one bucket sends back (also its manifest, so a resumed run can reuse it)."""

    shard: int
    part: int
    file: StagedFile | None
    rows: int
    tenants: int
    failed: tuple[TenantFailure, ...] = ()
    shadow_tenants: int = 0
    shadow_failed: tuple[TenantFailure, ...] = ()
    invalid_rows: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    pid: int = 0
    resumed: bool = False

    def to_json(self) -> dict[str, Any]:
        """The manifest document."""
        return {"shard": self.shard, "part": self.part, "rows": self.rows,
                "file": staged_to_json(self.file) if self.file else None,
                "tenants": self.tenants, "failed": [f.to_json() for f in self.failed],
                "shadow_tenants": self.shadow_tenants,
                "shadow_failed": [f.to_json() for f in self.shadow_failed],
                "invalid_rows": self.invalid_rows, "timings": self.timings, "pid": self.pid}

    @classmethod
    def from_manifest(cls, doc: dict[str, Any]) -> BucketResult:
        """A finished bucket of a killed attempt, read back from its manifest."""
        return cls(int(doc["shard"]), int(doc["part"]),
                   staged_from_json(doc["file"]) if doc.get("file") else None,
                   int(doc["rows"]), int(doc["tenants"]),
                   tuple(TenantFailure.from_json(f) for f in doc.get("failed", ())),
                   int(doc.get("shadow_tenants", 0)),
                   tuple(TenantFailure.from_json(f) for f in doc.get("shadow_failed", ())),
                   int(doc.get("invalid_rows", 0)), dict(doc.get("timings", {})),
                   int(doc.get("pid", 0)), resumed=True)


def _read(ctx: ScoreContext, bucket: ScoreBucket) -> pa.Table:
    """The bucket's rows of the day: the columns its tenants' models read (plus tenant id
    and row key; a missing one is each model's failure, not the bucket's)."""
    src = ctx.source
    if src.scan is not None:
        return read_scan(src, ctx.date, bucket.shard, bucket.part, bucket.parts,
                         ctx.registry.num_shards)
    wanted = {src.tenant_column, src.key_field.name}  # and the bucket's models' features
    wanted.update(f for p in bucket.models for mv in (p.production, p.shadow) if mv is not None
                  for f in mv.feature_names)
    names = [n for n in src.schema.names
             if n not in (DATE_COLUMN, SHARD_COLUMN) and n in wanted]
    if not src.direct:
        return src.delta().to_pyarrow_table(columns=names, filters=[
            (SHARD_COLUMN, "=", bucket.shard), (DATE_COLUMN, "=", ctx.date)])
    parts = [pq.read_table(uri, columns=names) for uri in bucket.files]
    return pa.concat_tables(parts, promote_options="permissive") if parts else \
        pa.schema([src.schema.field(n) for n in names]).empty_table()


def _load(reg: Registry, versions: list[ModelVersion], alias: str,
          rows: list[int]) -> list[LoadedModel | TenantFailure]:
    """Each version's model, or its tenant's failure (with ``rows`` rows) and reason."""
    return [got if isinstance(got, LoadedModel) else _failure(got, alias, mv.tenant_id, n)
            for mv, n, got in zip(versions, rows, load_models(reg, versions), strict=True)]


def _failure(exc: Exception, alias: str, tenant_id: str, rows: int) -> TenantFailure:
    if isinstance(exc, ChecksumMismatch):
        return TenantFailure(tenant_id, FailureReason.CORRUPT_ARTIFACT.value, str(exc), alias, rows)
    if isinstance(exc, TenantryError):
        return TenantFailure(tenant_id, FailureReason.LOAD_FAILED.value, str(exc), alias, rows)
    return TenantFailure(tenant_id, FailureReason.LOAD_FAILED.value,
                         f"{type(exc).__name__}: {exc}"[:500], alias, rows)


class _Loaded(NamedTuple):
    """A tenant of the bucket whose production model loaded."""

    k: int  # position among the bucket's tenants (sorted by id)
    pair: ModelPair
    rows: np.ndarray
    model: LoadedModel


def _group(table: pa.Table, column: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Tenant ids sorted, the row order grouping their rows (file order kept within a
    tenant), and each tenant's bounds in that order."""
    encoded = pc.dictionary_encode(pc.cast(table.column(column), pa.string())).combine_chunks()
    names = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    by_name = np.argsort(names.astype(str), kind="stable")
    order = np.argsort(np.argsort(by_name)[codes], kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(names))[by_name])])
    return names[by_name].tolist(), order, bounds


def _production(ctx: ScoreContext, bucket: ScoreBucket, names: list[str], order: np.ndarray,
                bounds: np.ndarray, failed: list[TenantFailure]) -> list[_Loaded]:
    """Load every tenant's production model (a failure each for those that cannot be)."""
    pairs = {p.tenant_id: p for p in bucket.models}  # planned for this shard and part
    num_shards = ctx.registry.num_shards
    wanted: list[tuple[int, ModelPair, np.ndarray]] = []
    for k, tenant_id in enumerate(names):
        pair = pairs.get(tenant_id)
        if pair is None and bucket_part(tenant_id, bucket.parts) != bucket.part:
            continue
        rows = order[bounds[k]:bounds[k + 1]]
        if pair is None and shard_of(tenant_id, num_shards) != bucket.shard:
            failed.append(TenantFailure(
                tenant_id, FailureReason.WRONG_SHARD.value,
                f"rows stored in shard {bucket.shard}, tenant hashes to "
                f"{shard_of(tenant_id, num_shards)} of {num_shards}", "production", len(rows)))
        elif pair is None or pair.production is None:
            failed.append(TenantFailure(tenant_id, FailureReason.NO_MODEL.value,
                                        f"tenant {tenant_id!r} has no production model",
                                        "production", len(rows)))
        else:
            wanted.append((k, pair, rows))
    models = _load(ctx.registry, [p.production for _, p, _ in wanted],  # type: ignore[misc]
                   "production", [len(r) for _, _, r in wanted])
    tenants: list[_Loaded] = []
    for (k, pair, rows), model in zip(wanted, models, strict=True):
        if isinstance(model, TenantFailure):
            failed.append(model)
        else:
            tenants.append(_Loaded(k, pair, rows, model))
    return tenants


def _score_production(ctx: ScoreContext, tenants: list[_Loaded], columns: BucketColumns,
                      failed: list[TenantFailure]) -> list[ScoredTenant]:
    """The tenants scored with their production model (failures recorded)."""
    requests = [Request(t.pair.tenant_id, "production", t.model, t.rows) for t in tenants]
    scored: list[ScoredTenant] = []
    for t, got in zip(tenants, score_requests(requests, columns), strict=True):
        got = _fits(ctx, got, "production", t.pair.tenant_id, len(t.rows))
        if isinstance(got, TenantFailure):
            failed.append(got)
        else:
            scored.append(ScoredTenant(t.k, t.pair, t.rows, t.model, *got))
    return scored


def _score_shadow(ctx: ScoreContext, tenants: list[ScoredTenant], columns: BucketColumns,
                  failed: list[TenantFailure]) -> int:
    """Score the scored tenants' shadow versions alongside; how many got shadow scores."""
    owners = [t for t in tenants if t.pair.shadow is not None]
    shadows: list[ModelVersion] = [t.pair.shadow for t in owners]  # type: ignore[misc]
    apart = [(t, mv) for t, mv in zip(owners, shadows, strict=True)
             if mv.version != t.model.version.version]
    loaded = iter(_load(ctx.registry, [mv for _, mv in apart], "shadow",
                        [len(t.rows) for t, _ in apart]))
    requests, kept = [], []
    for t, mv in zip(owners, shadows, strict=True):
        model = t.model if mv.version == t.model.version.version else next(loaded)
        if isinstance(model, TenantFailure):
            failed.append(model)
            continue
        requests.append(Request(t.pair.tenant_id, "shadow", model, t.rows))
        kept.append(t)
    owners = kept
    done = 0
    for t, req, got in zip(owners, requests, score_requests(requests, columns), strict=True):
        got = _fits(ctx, got, "shadow", t.pair.tenant_id, len(t.rows))
        if isinstance(got, TenantFailure):
            failed.append(got)
        else:
            t.shadow_scores, t.shadow_version = got[0], req.model.version.version
            done += 1
    return done


def score_bucket(ctx: ScoreContext, bucket: ScoreBucket) -> BucketResult:
    """Score every tenant found in one bucket's rows and stage the bucket's output file.

    Args:
        ctx: the run's shared context.
        bucket: the shard (part) to score, with its tenants' model versions.

    Returns:
        A :class:`BucketResult` (its manifest is written before this returns).

    Raises:
        Exception: reading the shard or writing the file failed (the job fails; re-running
            the run id resumes it).
    """
    t0, cpu0 = time.perf_counter(), time.process_time()
    table = _read(ctx, bucket)
    names, order, bounds = _group(table, ctx.source.tenant_column)
    columns = BucketColumns(table)
    read_s = time.perf_counter() - t0
    failed: list[TenantFailure] = []
    shadow_failed: list[TenantFailure] = []
    loaded = _production(ctx, bucket, names, order, bounds, failed)
    load_s = time.perf_counter() - t0 - read_s
    tenants = _score_production(ctx, loaded, columns, failed)
    shadow_tenants = _score_shadow(ctx, tenants, columns, shadow_failed) if ctx.shadow else 0
    score_s = time.perf_counter() - t0 - read_s
    staged = None
    if tenants:
        staged = ctx.output.write_file(ctx.run_id, ctx.date, bucket.shard, bucket.part,
                                       output_rows(table, tenants, names, ctx.source.key_field,
                                                   ctx.run_id, ctx.output.class_scores))
    result = BucketResult(bucket.shard, bucket.part, staged,
                          staged.rows if staged else 0, len(tenants), tuple(failed),
                          shadow_tenants, tuple(shadow_failed),
                          sum(int(t.bad.sum()) for t in tenants),
                          {"read_s": read_s, "load_s": load_s, "score_s": score_s,
                           "write_s": time.perf_counter() - t0 - read_s - score_s,
                           "cpu_s": time.process_time() - cpu0}, os.getpid())
    ctx.output.write_manifest(ctx.run_id, bucket.shard, bucket.part, result.to_json())
    return result


def _fits(ctx: ScoreContext, scored: Scored, alias: str, tenant_id: str,
          rows: int) -> Scored:
    """``scored``, unless they are class probabilities an output without ``scores`` cannot
    hold (planned from the index's objectives: an artifact that disagrees is not loaded)."""
    if isinstance(scored, TenantFailure) or scored[0].ndim == 1 or ctx.output.class_scores:
        return scored
    return TenantFailure(tenant_id, FailureReason.PREDICT_ERROR.value,
                         "class probabilities, and this output table has no scores column",
                         alias, rows)
