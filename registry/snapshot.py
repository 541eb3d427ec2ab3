"""In-memory view of the index: tenant -> versions and aliases, refreshed incrementally.

Serving resolves a tenant with one dict lookup here and never reads Delta per request.
:meth:`RegistrySnapshot.refresh` reads only the rows committed since the last refresh
(Delta change data feed), so a refresh costs a few milliseconds when nothing changed.
"""

from __future__ import annotations

import json
import posixpath
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pyarrow as pa

from registry.errors import UnknownTenant, UnknownVersion
from registry.index import DeltaIndex
from registry.types import Alias, ModelVersion, TenantModels, TenantSummary

__all__ = ["AliasStack", "RegistrySnapshot", "resolve_uri", "row_to_version"]

# Shared by every row without categorical features (never mutated). A plain dict: a
# ModelVersion is pickled (Ray tasks, actors), which a mappingproxy cannot be.
_NO_CATEGORIES: Mapping[str, tuple[str, ...]] = {}


def resolve_uri(root_uri: str | None, uri: str) -> str:
    """An index row's artifact location as a URI users can open.

    Rows record artifacts relative to the registry root (so a copied or moved registry
    reads only its own files); older rows hold absolute URIs, which are returned as they
    are (and refused at read time when outside the root).
    """
    if root_uri is None or "://" in uri or posixpath.isabs(uri):
        return uri
    return posixpath.join(root_uri, uri)


def row_to_version(row: dict, root_uri: str | None = None) -> ModelVersion:
    """Build a :class:`ModelVersion` from a ``models`` index row.

    Rows written before objectives were recorded (null ``objective``, ``num_class``,
    ``feature_types``) read as binary:logistic models with float features; rows written
    before publish-time forest checks have no ``forest_check`` (None).

    Args:
        row: the index row.
        root_uri: the registry root a relative ``artifact_uri`` is resolved against.
    """
    metrics = json.loads(row.get("metrics_json") or "{}")
    names = tuple(row.get("feature_names") or ())
    types = tuple(row.get("feature_types") or ())
    return ModelVersion(
        tenant_id=row["tenant_id"],
        shard=int(row["shard"]),
        version=int(row["version"]),
        artifact_uri=resolve_uri(root_uri, row["artifact_uri"]),
        sha256=row["sha256"],
        size_bytes=int(row["size_bytes"]),
        feature_names=names,
        metrics=metrics,
        run_id=row["run_id"],
        created_at=row["created_at"],
        data_date=row.get("data_date"),
        objective=row.get("objective") or "binary:logistic",
        num_class=int(row["num_class"]) if row.get("num_class") is not None else None,
        # all-float is stored as () (the default), so 100k versions share nothing per row
        feature_types=types if len(types) == len(names) and "categorical" in types else (),
        categories=_categories(row.get("params_json"), names, types),
        forest_check=row.get("forest_check"),
    )


def _categories(params_json: str | None, names: tuple[str, ...],
                types: tuple[str, ...]) -> Mapping[str, tuple[str, ...]]:
    """Per categorical feature, its categories as the row's ``params_json`` records them.

    Rows without params (or params that do not parse) have none: the model's own
    categories are used at load time.
    """
    if "categorical" not in types or not params_json:
        return _NO_CATEGORIES
    try:
        cats = json.loads(params_json).get("categories") or {}
    except (ValueError, AttributeError):
        return _NO_CATEGORIES
    if not isinstance(cats, dict):
        return _NO_CATEGORIES
    return {str(k): tuple(str(c) for c in v) for k, v in cats.items()
            if k in names and isinstance(v, list)}


@dataclass
class AliasStack:
    """History of one alias: ``set`` pushes, ``rollback`` pops, ``clear`` empties."""

    versions: list[int] = field(default_factory=list)

    def apply(self, action: str, version: int | None) -> None:
        """Fold one alias event into the stack."""
        if action == "set" and version is not None:
            if not self.versions or self.versions[-1] != version:
                self.versions.append(version)
        elif action == "rollback":
            if len(self.versions) > 1:
                self.versions.pop()
        elif action == "clear":
            self.versions.clear()

    @property
    def current(self) -> int | None:
        """The version the alias points at now."""
        return self.versions[-1] if self.versions else None

    @property
    def previous(self) -> int | None:
        """Where a rollback would take the alias."""
        return self.versions[-2] if len(self.versions) > 1 else None


class RegistrySnapshot:
    """Tenant -> versions/aliases map built from the index and kept fresh incrementally."""

    def __init__(self, index: DeltaIndex, root_uri: str | None = None) -> None:
        self._index = index
        # Relative artifact paths resolve against the root this snapshot reads from.
        self._root_uri = root_uri if root_uri is not None else posixpath.dirname(index.index_uri)
        self._lock = threading.Lock()
        self._versions: dict[str, dict[int, ModelVersion]] = {}
        self._aliases: dict[tuple[str, str], AliasStack] = {}
        self._seen = {"models": -1, "aliases": -1}
        self.last_refresh_at = 0.0  # monotonic time of the last successful refresh
        self.last_refresh_wall = 0.0
        self.last_refresh_seconds = 0.0
        self.generation = 0  # bumps whenever a refresh changed something

    # -- refreshing -------------------------------------------------------------------
    def refresh(self) -> bool:
        """Apply rows committed since the last refresh; True if anything changed."""
        started = time.perf_counter()
        with self._lock:
            models, mv = self._index.changes_since("models", self._seen["models"])
            aliases, av = self._index.changes_since("aliases", self._seen["aliases"])
            changed = models.num_rows > 0 or aliases.num_rows > 0
            for row in models.to_pylist():
                mver = row_to_version(row, self._root_uri)
                self._versions.setdefault(mver.tenant_id, {})[mver.version] = mver
            if aliases.num_rows:
                for row in _ordered(aliases):
                    stack = self._aliases.setdefault((row["tenant_id"], row["alias"]), AliasStack())
                    stack.apply(row["action"], row["version"])
            self._seen["models"], self._seen["aliases"] = mv, av
            if changed:
                self.generation += 1
            self.last_refresh_at = time.monotonic()
            self.last_refresh_wall = time.time()
            self.last_refresh_seconds = time.perf_counter() - started
        return changed

    def lag_seconds(self) -> float:
        """Seconds since the snapshot last confirmed it had every committed row."""
        if not self.last_refresh_at:
            return float("inf")
        return time.monotonic() - self.last_refresh_at

    # -- lookups ----------------------------------------------------------------------
    def tenants(self) -> list[str]:
        """Every tenant with at least one version, sorted."""
        return sorted(self._versions)

    def alias_version(self, tenant_id: str, alias: str | Alias = Alias.PRODUCTION) -> int | None:
        """The version ``alias`` points at, or None."""
        stack = self._aliases.get((tenant_id, Alias(alias).value))
        return stack.current if stack else None

    def alias_stack(self, tenant_id: str, alias: str | Alias) -> AliasStack:
        """A copy of the alias history of a tenant."""
        stack = self._aliases.get((tenant_id, Alias(alias).value))
        return AliasStack(list(stack.versions)) if stack else AliasStack()

    def resolve(self, tenant_id: str, alias: str | Alias = Alias.PRODUCTION) -> ModelVersion:
        """The version ``alias`` of a tenant points at.

        Raises:
            UnknownTenant: no such tenant or no version under that alias.
        """
        version = self.alias_version(tenant_id, alias)
        if version is None:
            if tenant_id in self._versions:
                raise UnknownTenant(f"tenant {tenant_id!r} has no {Alias(alias).value} model")
            raise UnknownTenant(f"unknown tenant {tenant_id!r}")
        return self.version(tenant_id, version)

    def version(self, tenant_id: str, version: int) -> ModelVersion:
        """One version of a tenant; raises UnknownTenant/UnknownVersion."""
        versions = self._versions.get(tenant_id)
        if versions is None:
            raise UnknownTenant(f"unknown tenant {tenant_id!r}")
        try:
            return versions[version]
        except KeyError:
            raise UnknownVersion(f"tenant {tenant_id!r} has no version {version}") from None

    def versions(self, tenant_id: str) -> list[ModelVersion]:
        """Every version of a tenant, newest first; raises UnknownTenant."""
        versions = self._versions.get(tenant_id)
        if not versions:
            raise UnknownTenant(f"unknown tenant {tenant_id!r}")
        return [versions[v] for v in sorted(versions, reverse=True)]

    def tenant_models(self, tenant_id: str) -> TenantModels:
        """Production and shadow versions of a tenant; raises UnknownTenant."""
        versions = self.versions(tenant_id)
        prod = self.alias_version(tenant_id, Alias.PRODUCTION)
        shadow = self.alias_version(tenant_id, Alias.SHADOW)
        by_v = {m.version: m for m in versions}
        return TenantModels(tenant_id, versions[0].shard, by_v.get(prod) if prod else None,
                            by_v.get(shadow) if shadow else None)

    def summaries(self) -> list[TenantSummary]:
        """One summary row per tenant, sorted by tenant id."""
        out = []
        for tid in self.tenants():
            versions = self._versions[tid]
            latest = max(versions)
            out.append(TenantSummary(tid, versions[latest].shard,
                                     self.alias_version(tid, Alias.PRODUCTION),
                                     self.alias_version(tid, Alias.SHADOW), latest))
        return out

    def production_map(self) -> dict[str, ModelVersion]:
        """tenant -> production version, for every tenant that has one."""
        out = {}
        for tid in self._versions:
            version = self.alias_version(tid, Alias.PRODUCTION)
            if version is not None and version in self._versions[tid]:
                out[tid] = self._versions[tid][version]
        return out

    def all_versions(self) -> Iterable[ModelVersion]:
        """Every version of every tenant."""
        for versions in self._versions.values():
            yield from versions.values()


def _commit_order(row: dict) -> int:
    """The Delta version that committed an alias event.

    The change feed says it (``_commit_version``); a first load reads current files, whose
    rows carry it (``commit_version``). Rows written before that column existed have -1: a
    first load can only place them before every newer event, by ``set_at``.
    """
    version = row.get("_commit_version")
    if version is None:
        version = row.get("commit_version")
    return -1 if version is None else int(version)


def _ordered(aliases: pa.Table) -> list[dict]:
    """Alias events in commit order, however they were read (``set_at`` only breaks ties)."""
    rows = aliases.to_pylist()
    rows.sort(key=lambda r: (_commit_order(r), r["set_at"]))
    return rows
