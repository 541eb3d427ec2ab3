"""Every ``models`` row of the index in numpy columns, built into a ModelVersion on demand.

A :class:`ModelVersion` object costs ~1.5 KB; a row here costs ~110 bytes: its tenant
number, version, raw sha256, size, metric values, and the number of the *shared* record
holding what a run's rows have in common (run id, time, date, objective, shard, feature
names and types, categories, metric names). Rows are only appended (a row read again
replaces the earlier one for the same tenant and version); a sorted ``tenant << 32 |
version`` key array finds a row by binary search. Rows that do not fit the columns (an
artifact outside the canonical path, an unusual checksum or metric) keep their decoded
value. A small memo keeps recently built values, so a hot tenant builds its value once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from registry.errors import RegistryError
from registry.rows import categories_of, float_free, resolve_uri, row_to_version
from registry.tenant_index import TenantIndex
from registry.types import ModelVersion

__all__ = ["VersionTable"]

MEMO_SIZE = 4096
_COLUMNS = ("tenant_id", "shard", "version", "artifact_uri", "sha256", "size_bytes",
            "feature_names", "metrics_json", "params_json", "data_date", "run_id",
            "created_at", "objective", "num_class", "feature_types", "forest_check")
_MAX_VERSION = 1 << 32


@dataclass(frozen=True)
class _Shared:
    """What a run's rows have in common, stored once."""

    shard: int
    run_id: str
    created_at: datetime
    data_date: str | None
    objective: str
    num_class: int | None
    forest_check: str | None
    feature_names: tuple[str, ...]
    feature_types: tuple[str, ...]
    categories: Mapping[str, tuple[str, ...]]
    metric_keys: tuple[str, ...]


def _canonical_path(shard: int, tenant_id: str, version: int) -> str:
    return f"artifacts/shard={shard:02d}/tenant={tenant_id}/v={version}/model.ubj"


def _sha_bytes(sha: Any) -> bytes | None:
    """The 32 raw bytes of a lowercase hex sha256, or None when it is anything else."""
    if not isinstance(sha, str) or len(sha) != 64 or sha != sha.lower():
        return None
    try:
        return bytes.fromhex(sha)
    except ValueError:
        return None


class VersionTable:
    """Version rows in columns (see the module docstring)."""

    def __init__(self, tenants: TenantIndex, root_uri: str | None) -> None:
        self._tenants = tenants
        self._root = root_uri
        self._tenant = np.empty(0, np.int32)
        self._version = np.empty(0, np.int64)
        self._sha = np.empty((0, 32), np.uint8)
        self._size = np.empty(0, np.int64)
        self._shared_of = np.empty(0, np.int32)  # -1: an odd row (see _odd)
        self._mstart = np.empty(0, np.int64)
        self._metrics = np.empty(0, np.float64)
        self._shared: list[_Shared] = []
        self._shared_ids: dict[tuple[Any, ...], int] = {}
        self._odd: dict[int, ModelVersion] = {}
        # Sorted keys and the row of each, swapped whole (readers run in other threads).
        self._lookup: tuple[np.ndarray, np.ndarray] = (np.empty(0, np.int64),
                                                       np.empty(0, np.int64))
        self._memo: dict[int, ModelVersion] = {}

    def __len__(self) -> int:
        return len(self._version)

    # -- adding -----------------------------------------------------------------------
    def add(self, rows: pa.Table) -> None:
        """Append ``models`` rows (any order; a later row for a key replaces an earlier).

        Raises:
            RegistryError: a version number outside ``0 .. 2**32 - 1``.
        """
        n = rows.num_rows
        cols = {c: (rows.column(c).to_pylist() if c in rows.column_names else [None] * n)
                for c in _COLUMNS}
        versions = np.asarray(cols["version"], np.int64)
        if n and (versions.min() < 0 or versions.max() >= _MAX_VERSION):
            raise RegistryError("a models row has a version outside 0 .. 2**32 - 1")
        numbers = self._tenants.numbers(cols["tenant_id"])
        base, sha = len(self), np.zeros((n, 32), np.uint8)
        shared_of = np.full(n, -1, np.int32)
        starts, values = np.empty(n, np.int64), []
        for i in range(n):
            row = {c: cols[c][i] for c in _COLUMNS}
            starts[i] = len(self._metrics) + len(values)
            packed = self._pack(row)
            if packed is None:
                self._odd[base + i] = row_to_version(row, self._root)
                continue
            shared_of[i], digest, metric_values = packed
            sha[i] = np.frombuffer(digest, np.uint8)
            values.extend(metric_values)
        self._tenant = np.concatenate([self._tenant, numbers.astype(np.int32)])
        self._version = np.concatenate([self._version, versions])
        self._sha = np.concatenate([self._sha, sha])
        self._size = np.concatenate([self._size, np.asarray(cols["size_bytes"], np.int64)])
        self._shared_of = np.concatenate([self._shared_of, shared_of])
        self._mstart = np.concatenate([self._mstart, starts])
        self._metrics = np.concatenate([self._metrics, np.asarray(values, np.float64)])
        self._reindex()

    def _pack(self, row: dict[str, Any]) -> tuple[int, bytes, list[float]] | None:
        """(shared record, raw sha256, metric values), or None if the row does not fit."""
        shard, version = int(row["shard"]), int(row["version"])
        digest = _sha_bytes(row["sha256"])
        if digest is None or row["artifact_uri"] != _canonical_path(shard, row["tenant_id"],
                                                                      version):
            return None
        metrics = json.loads(row["metrics_json"] or "{}")
        if not isinstance(metrics, dict) or any(type(v) is not float for v in metrics.values()):
            return None
        names = tuple(row["feature_names"] or ())
        types = tuple(row["feature_types"] or ())
        cats = categories_of(row["params_json"], names, types)
        key = (shard, row["run_id"], row["created_at"], row["data_date"],
               row["objective"] or "binary:logistic",
               None if row["num_class"] is None else int(row["num_class"]),
               row["forest_check"], names, float_free(names, types),
               tuple(cats.items()), tuple(metrics))
        shared = self._shared_ids.get(key)
        if shared is None:
            shared = len(self._shared)
            self._shared.append(_Shared(*key[:9], categories=cats, metric_keys=key[10]))
            self._shared_ids[key] = shared
        return shared, digest, list(metrics.values())

    def _reindex(self) -> None:
        keys = (self._tenant.astype(np.int64) << 32) | self._version
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        last = np.ones(len(ordered), bool)
        last[:-1] = ordered[1:] != ordered[:-1]  # of equal keys, the row added last wins
        self._lookup = (ordered[last], order[last])

    # -- reading ----------------------------------------------------------------------
    def find(self, tenant: int, version: int) -> int | None:
        """The row of (tenant number, version), or None."""
        if not 0 <= version < _MAX_VERSION:
            return None
        keys, rows = self._lookup
        key = (tenant << 32) | version
        i = int(keys.searchsorted(key))
        return int(rows[i]) if i < len(keys) and keys[i] == key else None

    def rows_of(self, tenant: int) -> list[int]:
        """The rows of a tenant number, by version ascending (empty: no versions)."""
        keys, rows = self._lookup
        lo, hi = keys.searchsorted([tenant << 32, (tenant + 1) << 32])
        return rows[lo:hi].tolist()

    def tenant_numbers(self) -> np.ndarray:
        """The numbers of the tenants that have at least one row, ascending."""
        return np.unique(self._lookup[0] >> 32)

    def latest_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Per tenant with rows: its number and the row of its highest version."""
        keys, rows = self._lookup
        tenant = keys >> 32
        last = np.ones(len(keys), bool)
        last[:-1] = tenant[1:] != tenant[:-1]
        return tenant[last], rows[last]

    def version_of(self, row: int) -> ModelVersion:
        """The ModelVersion of a row."""
        mv = self._memo.get(row)
        if mv is None:
            mv = self._odd.get(row) or self._build(row)
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[row] = mv
        return mv

    def _build(self, row: int) -> ModelVersion:
        s = self._shared[int(self._shared_of[row])]
        tenant_id = self._tenants.name(int(self._tenant[row]))
        version = int(self._version[row])
        start = int(self._mstart[row])
        values = self._metrics[start:start + len(s.metric_keys)].tolist()
        return ModelVersion(
            tenant_id=tenant_id, shard=s.shard, version=version,
            artifact_uri=resolve_uri(self._root, _canonical_path(s.shard, tenant_id, version)),
            sha256=self._sha[row].tobytes().hex(), size_bytes=int(self._size[row]),
            feature_names=s.feature_names, metrics=dict(zip(s.metric_keys, values, strict=True)),
            run_id=s.run_id, created_at=s.created_at, data_date=s.data_date,
            objective=s.objective, num_class=s.num_class, feature_types=s.feature_types,
            categories=s.categories, forest_check=s.forest_check)
