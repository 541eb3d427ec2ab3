"""A scoring bucket's output rows: tenant, row key, version(s), score(s), run id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from engine.batch.plan import ROW_INDEX_COLUMN, ModelPair
from engine.serving.model import LoadedModel

__all__ = ["ScoredTenant", "output_rows"]


@dataclass
class ScoredTenant:
    """One tenant of the bucket scored with its production model (and maybe its shadow)."""

    k: int  # position among the bucket's tenants (sorted by id)
    pair: ModelPair
    rows: np.ndarray  # its rows of the bucket's table, in file order
    model: LoadedModel  # the production model
    scores: np.ndarray  # float64 (rows,) or (rows, K); NaN: the row could not be scored
    bad: np.ndarray  # rows with an infinite feature value (null scores)
    shadow_scores: np.ndarray | None = None
    shadow_version: int | None = None


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


def output_rows(table: pa.Table, tenants: list[ScoredTenant], tenant_names: list[str],
                key: pa.Field, run_id: str, class_scores: bool) -> pa.Table:
    """The bucket's output rows (file columns), tenants in id order, each in row order.

    Args:
        table: the bucket's input rows.
        tenants: the scored tenants, in id order.
        tenant_names: the bucket's tenant ids (``ScoredTenant.k`` indexes them).
        key: the row-identity field (:data:`ROW_INDEX_COLUMN`: ordinals per tenant).
        run_id: the run's id.
        class_scores: whether the output has the ``scores``/``shadow_scores`` columns.
    """
    out = _parts(tenants)
    idx = np.concatenate(out["idx"])
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
        pa.array(tenant_names, pa.string())).cast(pa.string())
    columns: dict[str, Any] = {
        "tenant_id": tenant,
        key.name: key_col,
        "version": pa.array(np.concatenate(out["version"]), pa.int64()),
        "score": pa.array(score, pa.float64(), mask=np.isnan(score)),
        "shadow_version": pa.array(shadow_version, pa.int64(), mask=shadow_version < 0),
        "shadow_score": pa.array(shadow_score, pa.float64(), mask=np.isnan(shadow_score)),
        "run_id": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)),
                                                 pa.array([run_id])).cast(pa.string()),
        "scored_at": pa.array(np.full(n, np.datetime64(now_utc().replace(tzinfo=None), "us")),
                              pa.timestamp("us", tz="UTC")),
    }
    if class_scores:
        sizes = [len(i) for i in out["idx"]]
        columns["scores"] = _class_lists(out["scores"], sizes)
        columns["shadow_scores"] = _class_lists(out["shadow_scores"], sizes)
    return pa.table(columns)


def _parts(tenants: list[ScoredTenant]) -> dict[str, list[Any]]:
    """Per output column, the scored tenants' parts (tenants in id order)."""
    out: dict[str, list[Any]] = {k: [] for k in ("tenant", "idx", "ordinal", "version", "score",
                                                 "shadow_version", "shadow_score", "scores",
                                                 "shadow_scores")}
    for t in tenants:
        n = len(t.rows)
        out["tenant"].append(np.full(n, t.k))
        out["idx"].append(t.rows)
        out["ordinal"].append(np.arange(n, dtype=np.int64))
        out["version"].append(np.full(n, t.model.version.version, dtype=np.int64))
        shadow = t.shadow_scores if t.shadow_scores is not None else np.full(n, np.nan)
        for name, values in (("score", t.scores), ("shadow_score", shadow)):
            # class probabilities go to the list column; the one-value column stays null
            out[name].append(values if values.ndim == 1 else np.full(n, np.nan))
            out[f"{name}s"].append(values if values.ndim == 2 else None)
        out["shadow_version"].append(
            np.full(n, -1 if t.shadow_version is None else t.shadow_version))
    return out


def now_utc() -> datetime:
    """The time stamp rows are written with."""
    return datetime.now(UTC)
