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
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from registry.errors import RegistryError
from registry.row_columns import canonical_paths, column, digests, value_codes
from registry.rows import categories_of, float_free, resolve_uri, row_to_version
from registry.tenant_index import TenantIndex
from registry.types import ModelVersion

__all__ = ["VersionTable"]

MEMO_SIZE = 4096
# The columns whose values a run's rows share (params only matter for categorical rows).
_SHARED = (("shard", pa.int32()), ("run_id", pa.string()),
           ("created_at", pa.timestamp("us", tz="UTC")), ("data_date", pa.string()),
           ("objective", pa.string()), ("num_class", pa.int64()),
           ("forest_check", pa.string()), ("feature_names", pa.list_(pa.string())),
           ("feature_types", pa.list_(pa.string())))
_MAX_VERSION = 1 << 32


@dataclass(frozen=True)
class _Shared:
    """What a run's rows have in common, stored once."""

    shard: int
    metric_keys: tuple[str, ...]
    fields: dict[str, Any]
    """The ModelVersion fields every row of the record has (all but the row's own)."""


class VersionTable:
    """Version rows in columns (see the module docstring)."""

    def __init__(self, tenants: TenantIndex, root_uri: str | None) -> None:
        self._tenants = tenants
        self._root = root_uri
        self._prefix = resolve_uri(root_uri, "artifacts/")  # of every canonical artifact path
        self._tenant = np.empty(0, np.int32)
        self._version = np.empty(0, np.uint32)  # range-checked on add
        self._sha = np.empty((0, 32), np.uint8)
        self._size = np.empty(0, np.int64)
        self._shared_of = np.empty(0, np.int32)  # -1: an odd row (see _odd)
        self._mstart = np.empty(0, np.uint32)  # where the row's metric values start
        self._metrics = np.empty(0, np.float64)
        self._shared: list[_Shared] = []
        self._shared_ids: dict[tuple[Any, ...], int] = {}
        self._keysets: dict[tuple[str, ...], int] = {}  # metric names -> number
        self._keyset_names: list[tuple[str, ...]] = []
        self._odd: dict[int, ModelVersion] = {}
        # Sorted keys and the row of each, swapped whole (readers run in other threads).
        self._lookup: tuple[np.ndarray, np.ndarray] = (np.empty(0, np.int64),
                                                       np.empty(0, np.int32))
        self._memo: dict[int, ModelVersion] = {}
        self.tenant_count = 0  # tenants with at least one row

    def __len__(self) -> int:
        return len(self._version)

    # -- adding -----------------------------------------------------------------------
    def add(self, rows: pa.Table) -> None:
        """Append ``models`` rows (any order; a later row for a key replaces an earlier).

        Raises:
            RegistryError: a version number outside ``0 .. 2**32 - 1``.
        """
        n, base = rows.num_rows, len(self)
        if not n:
            return
        versions = column(rows, "version", pa.int64()).to_numpy(zero_copy_only=False)
        if versions.min() < 0 or versions.max() >= _MAX_VERSION:
            raise RegistryError("a models row has a version outside 0 .. 2**32 - 1")
        tenant_ids = column(rows, "tenant_id", pa.string())
        numbers = self._tenants.numbers(tenant_ids.to_pylist())
        sha, fits = digests(column(rows, "sha256", pa.string()))
        paths = canonical_paths(tenant_ids, column(rows, "shard", pa.int32()), versions)
        fits &= pc.fill_null(pc.equal(column(rows, "artifact_uri", pa.string()), paths),
                             False).to_numpy(zero_copy_only=False)
        keysets, starts, values = self._metric_values(
            column(rows, "metrics_json", pa.string()).to_pylist())
        fits &= keysets >= 0
        shared_of = self._shared_rows(rows, keysets)
        shared_of[~fits] = -1
        for i in np.flatnonzero(~fits).tolist():
            self._odd[base + i] = row_to_version(rows.slice(i, 1).to_pylist()[0], self._root)
        self._tenant = np.concatenate([self._tenant, numbers.astype(np.int32)])
        self._version = np.concatenate([self._version, versions.astype(np.uint32)])
        self._sha = np.concatenate([self._sha, sha])
        self._size = np.concatenate([self._size, column(rows, "size_bytes", pa.int64())
                                     .to_numpy(zero_copy_only=False)])
        self._shared_of = np.concatenate([self._shared_of, shared_of])
        self._mstart = np.concatenate([self._mstart, starts.astype(np.uint32)])
        self._metrics = np.concatenate([self._metrics, np.asarray(values, np.float64)])
        self._reindex()

    def _metric_values(self, texts: list[str | None]) -> tuple[np.ndarray, np.ndarray, list]:
        """Per row its metric-name set (-1: not all floats) and start; the values in order."""
        parsed = json.loads("[" + ",".join(t or "{}" for t in texts) + "]")
        keysets = np.full(len(parsed), -1, np.int64)
        starts = np.empty(len(parsed), np.int64)
        values: list[float] = []
        for i, metrics in enumerate(parsed):
            starts[i] = len(self._metrics) + len(values)
            if isinstance(metrics, dict) and all(type(v) is float for v in metrics.values()):
                keysets[i] = self._keyset(tuple(metrics))
                values.extend(metrics.values())
        return keysets, starts, values

    def _keyset(self, names: tuple[str, ...]) -> int:
        number = self._keysets.get(names)
        if number is None:
            number = self._keysets[names] = len(self._keyset_names)
            self._keyset_names.append(names)
        return number

    def _shared_rows(self, rows: pa.Table, keysets: np.ndarray) -> np.ndarray:
        """The shared record of every row, made once per distinct combination."""
        cols = {name: column(rows, name, type_) for name, type_ in _SHARED}
        codes, firsts = zip(*(value_codes(c) for c in cols.values()), strict=True)
        types_first = firsts[list(cols).index("feature_types")]
        categorical = np.array([("categorical" in (cols["feature_types"][int(r)].as_py() or ()))
                                for r in types_first] + [False])  # [-1]: null types
        params, _ = value_codes(column(rows, "params_json", pa.string()))
        params[~categorical[codes[list(cols).index("feature_types")]]] = -1
        combos = np.stack([*codes, params, keysets], axis=1)
        _, first, inverse = np.unique(combos, axis=0, return_index=True, return_inverse=True)
        ids = np.array([self._intern({name: c[int(r)].as_py() for name, c in cols.items()},
                                     rows.column("params_json")[int(r)].as_py()
                                     if "params_json" in rows.column_names else None,
                                     int(keysets[r]))
                        for r in first], np.int32)
        return ids[inverse.reshape(-1)]

    def _intern(self, row: dict[str, Any], params_json: str | None, keyset: int) -> int:
        """The number of the shared record of ``row``'s values, made if new."""
        names = tuple(row["feature_names"] or ())
        types = tuple(row["feature_types"] or ())
        cats = categories_of(params_json, names, types)
        key = (row["shard"], row["run_id"], row["created_at"], row["data_date"],
               row["objective"] or "binary:logistic", row["num_class"], row["forest_check"],
               names, float_free(names, types), tuple(cats.items()), keyset)
        shared = self._shared_ids.get(key)
        if shared is None:
            shared = len(self._shared)
            keys = self._keyset_names[keyset] if keyset >= 0 else ()
            self._shared.append(_Shared(row["shard"], keys, {
                "shard": row["shard"], "run_id": row["run_id"], "created_at": row["created_at"],
                "data_date": row["data_date"], "objective": key[4], "num_class": row["num_class"],
                "forest_check": row["forest_check"], "feature_names": names,
                "feature_types": key[8], "categories": cats}))
            self._shared_ids[key] = shared
        return shared

    def _reindex(self) -> None:
        keys = (self._tenant.astype(np.int64) << 32) | self._version.astype(np.int64)
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        last = np.ones(len(ordered), bool)
        last[:-1] = ordered[1:] != ordered[:-1]  # of equal keys, the row added last wins
        self._lookup = (ordered[last], order[last].astype(np.int32))
        tenants = ordered[last] >> 32
        self.tenant_count = int(np.count_nonzero(tenants[1:] != tenants[:-1])) + bool(len(tenants))

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

    def versions_of(self, tenant: int) -> list[int]:
        """The version numbers of a tenant number, ascending (empty: no versions)."""
        keys, _ = self._lookup
        lo, hi = keys.searchsorted([tenant << 32, (tenant + 1) << 32])
        return (keys[lo:hi] & 0xFFFFFFFF).tolist()

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
        # On the request path of every tenant outside the memo: filling the instance's
        # __dict__ skips the frozen dataclass's per-field object.__setattr__ (~3 us).
        mv = object.__new__(ModelVersion)
        fields = mv.__dict__
        fields.update(s.fields)
        fields.update(
            tenant_id=tenant_id, version=version, size_bytes=int(self._size[row]),
            artifact_uri=f"{self._prefix}shard={s.shard:02d}/tenant={tenant_id}/v={version}"
                         "/model.ubj",
            sha256=self._sha[row].tobytes().hex(),
            metrics=dict(zip(s.metric_keys, self._metrics[start:start + len(s.metric_keys)]
                             .tolist(), strict=True)))
        return mv
