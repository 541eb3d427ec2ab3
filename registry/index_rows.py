"""The rows a registry write appends to the index: a run's ``models`` rows, alias events.

Every writer timestamp comes from :func:`now` (looked up at call time, so tests can skew
one writer's clock); timestamps are informative only and never order events.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pyarrow as pa

from registry.ids import validate_tenant_id
from registry.index import RowsAt
from registry.types import Alias, AliasMove, NewVersion

__all__ = ["alias_rows", "model_rows", "now"]


def now() -> datetime:
    """The writer's clock (UTC)."""
    return datetime.now(UTC)


def model_rows(versions: Sequence[NewVersion], run_id: str, paths: Sequence[str]) -> pa.Table:
    """Index rows of a run's versions; ``paths`` are the artifacts relative to the root."""
    created = now()

    def metric(nv: NewVersion, key: str) -> float | None:
        value = nv.metrics.get(key)
        return None if value is None else float(value)

    return pa.table({
        "tenant_id": [v.artifact.tenant_id for v in versions],
        "shard": pa.array([v.artifact.shard for v in versions], pa.int32()),
        "version": [v.artifact.version for v in versions],
        "artifact_uri": list(paths),
        "sha256": [v.artifact.sha256 for v in versions],
        "size_bytes": [v.artifact.size_bytes for v in versions],
        "feature_names": [list(v.feature_names) for v in versions],
        "auc": [metric(v, "auc") for v in versions],
        "logloss": [metric(v, "logloss") for v in versions],
        "n_train": pa.array([metric(v, "n_train") for v in versions], pa.float64())
                     .cast(pa.int64()),
        "n_holdout": pa.array([metric(v, "n_holdout") for v in versions], pa.float64())
                       .cast(pa.int64()),
        "base_rate": [metric(v, "base_rate") for v in versions],
        "metrics_json": [json.dumps({k: float(x) for k, x in v.metrics.items()})
                         for v in versions],
        "params_json": [json.dumps(dict(v.params), default=str) for v in versions],
        "data_date": [v.data_date for v in versions],
        "run_id": [run_id] * len(versions),
        "created_at": pa.array([created] * len(versions), pa.timestamp("us", tz="UTC")),
        "objective": [v.objective for v in versions],
        "num_class": pa.array([v.num_class for v in versions], pa.int64()),
        "feature_types": [list(v.feature_types) or ["float"] * len(v.feature_names)
                          for v in versions],
        "forest_check": pa.array([v.forest_check for v in versions], pa.string()),
    }, schema=None)



def alias_rows(shard_of: Callable[[str], int], moves: Sequence[AliasMove], run_id: str | None,
               action: str | None = None, actor: str | None = None) -> RowsAt:
    """Alias events for one commit, built once the commit's table version is known.

    Events are ordered by that version, so one commit holds at most one event per
    (tenant, alias): the last move given for it.
    """
    last: dict[tuple[str, str], AliasMove] = {}
    for m in moves:
        last[(validate_tenant_id(m.tenant_id), Alias.parse(m.alias).value)] = m
    moves = list(last.values())

    def rows_at(commit_version: int) -> pa.Table:
        at = now()  # the writer's clock: informative only, never used to order events
        return pa.table({
            "tenant_id": [m.tenant_id for m in moves],
            "shard": pa.array([shard_of(m.tenant_id) for m in moves], pa.int32()),
            "alias": [m.alias for m in moves],
            "version": pa.array([m.version for m in moves], pa.int64()),
            "action": [action or ("clear" if m.version is None else "set") for m in moves],
            "reason": [m.reason for m in moves],
            "run_id": [run_id] * len(moves),
            "set_at": pa.array([at] * len(moves), pa.timestamp("us", tz="UTC")),
            "commit_version": pa.array([commit_version] * len(moves), pa.int64()),
            "actor": pa.array([actor] * len(moves), pa.string()),
        })

    return rows_at


