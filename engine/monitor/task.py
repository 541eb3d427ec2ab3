"""One monitoring bucket: read the day's logged rows of its tenants, compare each tenant's
rows with the profile of the version that served them.

Runs inside a Ray Data task (or in-process in tests) and returns small typed figures only.
The driver has already chosen, per tenant, the version to judge (its newest with enough
rows); rows of the tenant's other versions are left out.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.monitor.judge import Status, TenantFigures
from engine.monitor.psi import drift
from engine.monitor.tables import DeltaAppender
from registry import Registry
from registry.delta import sql_str
from registry.types import ModelProfile

__all__ = ["BucketResult", "MonitorBucket", "MonitorContext", "Pick", "judge_bucket",
           "tenant_figures"]


@dataclass(frozen=True, slots=True)
class Pick:
    """A tenant, the version of it to judge and that version's rows on the day."""

    tenant_id: str
    version: int
    rows: int


@dataclass(frozen=True)
class MonitorBucket:
    """A unit of work: some tenants of the day."""

    index: int
    picks: tuple[Pick, ...]


@dataclass(frozen=True)
class MonitorContext:
    """What every bucket of one run shares."""

    registry: Registry
    predictions: DeltaAppender
    date: str
    min_rows: int


@dataclass(frozen=True)
class BucketResult:
    """What one bucket sends back."""

    index: int
    figures: tuple[TenantFigures, ...]
    rows: int
    read_s: float
    judge_s: float


def tenant_figures(tenant_id: str, version: int, profile: ModelProfile,
                   x: np.ndarray, scores: np.ndarray) -> TenantFigures:
    """One tenant's rows (``x`` in model order, NaN = missing; ``scores``) against the
    profile of the version that served them."""
    features = tuple(drift(x[:, j], ref) for j, ref in enumerate(profile.features))
    score = drift(scores, profile.score) if profile.score is not None else None
    return TenantFigures(tenant_id, version, Status.JUDGED, len(scores), features, score)


def _groups(table: pa.Table) -> dict[tuple[str, int], np.ndarray]:
    """Row indices of ``table`` per (tenant_id, version)."""
    if not table.num_rows:
        return {}
    enc = pc.dictionary_encode(table.column("tenant_id")).combine_chunks()
    names = enc.dictionary.to_pylist()
    codes = enc.indices.to_numpy(zero_copy_only=False)
    versions = table.column("version").to_numpy(zero_copy_only=False)
    order = np.lexsort((versions, codes))
    keys = np.stack([codes[order], versions[order]], axis=1)
    starts = np.flatnonzero(np.concatenate([[True], np.any(keys[1:] != keys[:-1], axis=1)]))
    bounds = np.append(starts, len(order))
    return {(names[int(keys[s, 0])], int(keys[s, 1])): order[s:e]
            for s, e in itertools.pairwise(bounds)}


class _Rows:
    """A read table's features (list<double>) and scores, flattened once."""

    def __init__(self, table: pa.Table) -> None:
        col = table.column("features").combine_chunks() if table.num_rows else \
            pa.array([], pa.list_(pa.float64()))
        self.lengths = pc.fill_null(pc.list_value_length(col), -1).to_numpy(
            zero_copy_only=False)
        self.offsets = col.offsets.to_numpy(zero_copy_only=False)
        # Nulls (missing features) come out as NaN.
        self.values = col.values.to_numpy(zero_copy_only=False).astype(np.float64)
        self.scores = (table.column("score").to_numpy() if table.num_rows
                       else np.empty(0)).astype(np.float64)

    def take(self, idx: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``idx`` as a ``(rows, width)`` matrix and their scores (rows logged with
        another width are left out)."""
        idx = idx[self.lengths[idx] == width]
        x = self.values[self.offsets[idx][:, None] + np.arange(width)] if width \
            else np.empty((len(idx), 0))
        return x, self.scores[idx]


def judge_bucket(ctx: MonitorContext, bucket: MonitorBucket) -> BucketResult:
    """The figures of every tenant of ``bucket``.

    Args:
        ctx: the run's shared context.
        bucket: its tenants with the version to judge.

    Returns:
        A :class:`BucketResult`: one :class:`TenantFigures` per pick (``too_few_rows`` and
        ``no_profile`` ones without drift figures).
    """
    t0 = time.perf_counter()
    profiles = ctx.registry.profiles([(p.tenant_id, p.version) for p in bucket.picks
                                      if p.rows >= ctx.min_rows])
    wanted = [p for p in bucket.picks if (p.tenant_id, p.version) in profiles]
    table = pa.table({"tenant_id": pa.array([], pa.string())})
    if wanted:
        tenants = ", ".join(sql_str(p.tenant_id) for p in wanted)
        table = ctx.predictions.sql(
            f"SELECT tenant_id, version, score, features FROM t WHERE date = "
            f"{sql_str(ctx.date)} AND tenant_id IN ({tenants})")
    read_s = time.perf_counter() - t0
    groups = _groups(table) if wanted else {}
    rows = _Rows(table)
    figures = []
    for p in bucket.picks:
        profile = profiles.get((p.tenant_id, p.version))
        if p.rows < ctx.min_rows:
            figures.append(TenantFigures(p.tenant_id, p.version, Status.TOO_FEW_ROWS, p.rows))
        elif profile is None:
            figures.append(TenantFigures(p.tenant_id, p.version, Status.NO_PROFILE, p.rows))
        else:
            x, scores = rows.take(groups.get((p.tenant_id, p.version), np.empty(0, np.int64)),
                                  len(profile.features))
            figures.append(tenant_figures(p.tenant_id, p.version, profile, x, scores))
    return BucketResult(bucket.index, tuple(figures), table.num_rows, read_s,
                        time.perf_counter() - t0 - read_s)
