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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.batch.output import OutputTable, StagedFile, now_utc, staged_from_json, staged_to_json
from engine.batch.plan import ROW_INDEX_COLUMN, DataSource, ModelPair, ScoreBucket
from engine.batch.report import FailureReason, TenantFailure
from engine.batch.scan import read_scan
from engine.batch.walk import predict_rows
from engine.serving.model import LoadedModel, load_model
from registry import ModelVersion, Registry, shard_of
from registry.errors import ChecksumMismatch, TenantryError
from training.bucket import bucket_part
from training.features import DATE_COLUMN, SHARD_COLUMN

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


class _Columns:
    """The bucket's feature columns as float32 arrays, converted once and shared by tenants."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table
        self._cache: dict[str, np.ndarray | str] = {}
        self._text: dict[str, tuple[list[str], np.ndarray] | str] = {}

    def matrix(self, names: tuple[str, ...], rows: np.ndarray,
               categories: Mapping[int, Mapping[str, int]] | None = None) -> np.ndarray:
        """``(len(rows), len(names))`` float32; NaN = missing.

        Args:
            names: the model's features.
            rows: the tenant's rows of the bucket.
            categories: per categorical column, category -> the model's code.

        Raises:
            KeyError: a column is missing, not numeric, or (categorical) not text (message
                says which).
        """
        cols = []
        for j, name in enumerate(names):
            if categories and j in categories:
                cols.append(self._codes(name, categories[j], rows))
                continue
            col = self._cache.get(name)
            if col is None:
                col = self._convert(name)
                self._cache[name] = col
            if isinstance(col, str):
                raise KeyError(col)
            cols.append(col[rows])
        return np.column_stack(cols) if cols else np.empty((len(rows), 0), np.float32)

    def _codes(self, name: str, codes: Mapping[str, int], rows: np.ndarray) -> np.ndarray:
        """A categorical column's values as the model's codes (NaN: null or unseen)."""
        found = self._text.get(name)
        if found is None:
            found = self._text[name] = self._encode(name)
        if isinstance(found, str):
            raise KeyError(found)
        values, index = found
        lookup = np.array([codes.get(v, np.nan) for v in values] + [np.nan], np.float32)
        return lookup[index[rows]]

    def _encode(self, name: str) -> tuple[list[str], np.ndarray] | str:
        if name not in self._table.column_names:
            return f"no column {name!r}"
        col = self._table.column(name)
        text = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
        if not (pa.types.is_string(text) or pa.types.is_large_string(text)):
            return f"column {name!r} is {col.type}, not text: the model's {name} is categorical"
        encoded = pc.dictionary_encode(pc.cast(col, pa.string())).combine_chunks()
        values = encoded.dictionary.to_pylist()
        return values, encoded.indices.fill_null(len(values)).to_numpy(zero_copy_only=False)

    def _convert(self, name: str) -> np.ndarray | str:
        if name not in self._table.column_names:
            return f"no column {name!r}"
        try:
            values = pc.cast(self._table.column(name), pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return f"column {name!r} is not numeric ({self._table.column(name).type})"
        with np.errstate(over="ignore"):  # beyond float32: inf, caught per row below
            return values.to_numpy(zero_copy_only=False).astype(np.float32)


def _read(ctx: ScoreContext, bucket: ScoreBucket) -> pa.Table:
    src = ctx.source
    if src.scan is not None:
        return read_scan(src, ctx.date, bucket.shard, bucket.part, bucket.parts,
                         ctx.registry.num_shards)
    names = [n for n in src.schema.names if n not in (DATE_COLUMN, SHARD_COLUMN)]
    if not src.direct:
        return src.delta().to_pyarrow_table(columns=names, filters=[
            (SHARD_COLUMN, "=", bucket.shard), (DATE_COLUMN, "=", ctx.date)])
    parts = [pq.read_table(uri, columns=names) for uri in bucket.files]
    return pa.concat_tables(parts, promote_options="permissive") if parts else \
        pa.schema([src.schema.field(n) for n in names]).empty_table()


def _load(reg: Registry, mv: ModelVersion, alias: str, tenant_id: str,
          rows: int) -> LoadedModel | TenantFailure:
    try:
        return load_model(reg, mv)
    except ChecksumMismatch as exc:
        return TenantFailure(tenant_id, FailureReason.CORRUPT_ARTIFACT.value, str(exc), alias, rows)
    except TenantryError as exc:
        return TenantFailure(tenant_id, FailureReason.LOAD_FAILED.value, str(exc), alias, rows)
    except Exception as exc:  # noqa: BLE001 - one tenant's model must not sink the bucket
        return TenantFailure(tenant_id, FailureReason.LOAD_FAILED.value,
                             f"{type(exc).__name__}: {exc}"[:500], alias, rows)


def _score(model: LoadedModel, columns: _Columns, rows: np.ndarray, alias: str,
           tenant_id: str) -> tuple[np.ndarray, np.ndarray] | TenantFailure:
    """(scores with NaN for rows that cannot be scored, that mask) or a failure; scores are
    ``(rows,)`` or, for a multi-class model, ``(rows, K)``."""
    try:
        x = columns.matrix(model.feature_names, rows, model.category_codes)
    except KeyError as exc:
        return TenantFailure(tenant_id, FailureReason.FEATURE_MISMATCH.value,
                             f"model {model.key} expects {model.n_features} features "
                             f"({', '.join(model.feature_names[:4])}…): {exc.args[0]}",
                             alias, len(rows))
    bad = np.isinf(x).any(axis=1)  # serving answers 422 for such a row; here: a null score
    try:
        scores = predict_rows(model, x).astype(np.float64)
    except Exception as exc:  # noqa: BLE001 - isolate the tenant
        return TenantFailure(tenant_id, FailureReason.PREDICT_ERROR.value,
                             f"{type(exc).__name__}: {exc}"[:500], alias, len(rows))
    scores[bad] = np.nan
    return scores, bad


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
    encoded = pc.dictionary_encode(pc.cast(table.column(ctx.source.tenant_column),
                                           pa.string())).combine_chunks()
    names = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    by_name = np.argsort(names.astype(str), kind="stable")
    order = np.argsort(np.argsort(by_name)[codes], kind="stable")  # rows grouped, file order kept
    bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(names))[by_name])])
    columns = _Columns(table)
    read_s = time.perf_counter() - t0
    pairs = {p.tenant_id: p for p in bucket.models}
    num_shards = ctx.registry.num_shards
    out: dict[str, list[Any]] = {k: [] for k in ("tenant", "idx", "ordinal", "version", "score",
                                                 "shadow_version", "shadow_score", "scores",
                                                 "shadow_scores")}
    failed: list[TenantFailure] = []
    shadow_failed: list[TenantFailure] = []
    tenants = shadow_tenants = invalid = 0
    for k, tenant_id in enumerate(names[by_name].tolist()):
        if bucket_part(tenant_id, bucket.parts) != bucket.part:
            continue
        rows = order[bounds[k]:bounds[k + 1]]
        n = len(rows)
        pair = pairs.get(tenant_id, ModelPair(tenant_id, None))
        if shard_of(tenant_id, num_shards) != bucket.shard:
            failed.append(TenantFailure(
                tenant_id, FailureReason.WRONG_SHARD.value,
                f"rows stored in shard {bucket.shard}, tenant hashes to "
                f"{shard_of(tenant_id, num_shards)} of {num_shards}", "production", n))
            continue
        if pair.production is None:
            failed.append(TenantFailure(tenant_id, FailureReason.NO_MODEL.value,
                                        f"tenant {tenant_id!r} has no production model",
                                        "production", n))
            continue
        model = _load(ctx.registry, pair.production, "production", tenant_id, n)
        scored = model if isinstance(model, TenantFailure) else \
            _score(model, columns, rows, "production", tenant_id)
        scored = _fits(ctx, scored, "production", tenant_id, n)
        if isinstance(scored, TenantFailure):
            failed.append(scored)
            continue
        tenants += 1
        invalid += int(scored[1].sum())
        shadow_scores: np.ndarray = np.full(n, np.nan)
        shadow_version: int | None = None
        if ctx.shadow and pair.shadow is not None:
            same = pair.shadow.version == pair.production.version
            shadow = model if same else _load(ctx.registry, pair.shadow, "shadow", tenant_id, n)
            got = shadow if isinstance(shadow, TenantFailure) else \
                _score(shadow, columns, rows, "shadow", tenant_id)
            got = _fits(ctx, got, "shadow", tenant_id, n)
            if isinstance(got, TenantFailure):
                shadow_failed.append(got)
            else:
                shadow_scores, shadow_version = got[0], pair.shadow.version
                shadow_tenants += 1
        out["tenant"].append(np.full(n, k))
        out["idx"].append(rows)
        out["ordinal"].append(np.arange(n, dtype=np.int64))
        out["version"].append(np.full(n, pair.production.version, dtype=np.int64))
        for name, values in (("score", scored[0]), ("shadow_score", shadow_scores)):
            # class probabilities go to the list column; the one-value column stays null
            out[name].append(values if values.ndim == 1 else np.full(n, np.nan))
            out[f"{name}s"].append(values if values.ndim == 2 else None)
        out["shadow_version"].append(np.full(n, -1 if shadow_version is None else shadow_version))
    score_s = time.perf_counter() - t0 - read_s
    staged = None
    if out["tenant"]:
        staged = ctx.output.write_file(ctx.run_id, ctx.date, bucket.shard, bucket.part,
                                       _rows(ctx, table, names[by_name], out))
    result = BucketResult(bucket.shard, bucket.part, staged,
                          staged.rows if staged else 0, tenants, tuple(failed), shadow_tenants,
                          tuple(shadow_failed), invalid,
                          {"read_s": read_s, "score_s": score_s,
                           "write_s": time.perf_counter() - t0 - read_s - score_s,
                           "cpu_s": time.process_time() - cpu0}, os.getpid())
    ctx.output.write_manifest(ctx.run_id, bucket.shard, bucket.part, result.to_json())
    return result


def _fits(ctx: ScoreContext, scored: tuple[np.ndarray, np.ndarray] | TenantFailure,
          alias: str, tenant_id: str, rows: int) -> tuple[np.ndarray, np.ndarray] | TenantFailure:
    """``scored``, unless they are class probabilities an output without ``scores`` cannot
    hold (planned from the index's objectives: an artifact that disagrees is not loaded)."""
    if isinstance(scored, TenantFailure) or scored[0].ndim == 1 or ctx.output.class_scores:
        return scored
    return TenantFailure(tenant_id, FailureReason.PREDICT_ERROR.value,
                         "class probabilities, and this output table has no scores column",
                         alias, rows)


def _class_lists(parts: list[np.ndarray | None], sizes: list[int]) -> pa.Array:
    """A list<float64> per row: a multi-class tenant's class probabilities; null for
    one-output models and rows that could not be scored."""
    lengths, values, valid = [], [], []
    for arr, n in zip(parts, sizes, strict=True):
        if arr is None:
            lengths.append(np.zeros(n, np.int64))
            valid.append(np.zeros(n, bool))
            continue
        ok = ~np.isnan(arr).any(axis=1)
        lengths.append(np.where(ok, arr.shape[1], 0))
        values.append(arr[ok].ravel())
        valid.append(ok)
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int32)
    flat = np.concatenate(values) if values else np.empty(0)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat, pa.float64()),
                                    mask=pa.array(~np.concatenate(valid)))


def _rows(ctx: ScoreContext, table: pa.Table, tenant_names: np.ndarray,
          out: dict[str, list[Any]]) -> pa.Table:
    """The bucket's output rows (file columns), tenants in id order, each in row order."""
    idx = np.concatenate(out["idx"])
    key = ctx.source.key_field
    if key.name == ROW_INDEX_COLUMN:
        key_col: Any = pa.array(np.concatenate(out["ordinal"]), pa.int64())
    else:
        key_col = table.column(key.name).take(pa.array(idx))
    score = np.concatenate(out["score"])
    shadow_score = np.concatenate(out["shadow_score"])
    shadow_version = np.concatenate(out["shadow_version"])
    n = len(idx)
    tenant = pa.DictionaryArray.from_arrays(
        pa.array(np.concatenate(out["tenant"]), pa.int32()),
        pa.array(tenant_names.tolist(), pa.string())).cast(pa.string())
    columns: dict[str, Any] = {
        "tenant_id": tenant,
        key.name: key_col,
        "version": pa.array(np.concatenate(out["version"]), pa.int64()),
        "score": pa.array(score, pa.float64(), mask=np.isnan(score)),
        "shadow_version": pa.array(shadow_version, pa.int64(), mask=shadow_version < 0),
        "shadow_score": pa.array(shadow_score, pa.float64(), mask=np.isnan(shadow_score)),
        "run_id": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)),
                                                 pa.array([ctx.run_id])).cast(pa.string()),
        "scored_at": pa.array(np.full(n, np.datetime64(now_utc().replace(tzinfo=None), "us")),
                              pa.timestamp("us", tz="UTC")),
    }
    if ctx.output.class_scores:
        sizes = [len(i) for i in out["idx"]]
        columns["scores"] = _class_lists(out["scores"], sizes)
        columns["shadow_scores"] = _class_lists(out["shadow_scores"], sizes)
    return pa.table(columns)
