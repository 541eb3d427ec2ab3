"""In-memory view of the index: tenant -> versions and aliases, refreshed incrementally.

Serving resolves a tenant here and never reads Delta per request. The view is columnar
(:mod:`registry.tenant_index`, :mod:`registry.version_table`, :mod:`registry.alias_state`):
no Python object per tenant or version, so a replica holding 100,000 tenants stays small,
and a lookup costs the same at any tenant count. :meth:`RegistrySnapshot.refresh` reads
only the rows committed since the last refresh (Delta change data feed), so a refresh
costs a few milliseconds when nothing changed and grows with what changed.
"""

from __future__ import annotations

import posixpath
import threading
import time
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from registry.alias_state import AliasStack, AliasStacks
from registry.errors import UnknownTenant, UnknownVersion
from registry.index import DeltaIndex
from registry.rows import resolve_uri, row_to_version
from registry.tenant_index import TenantIndex
from registry.types import Alias, ModelVersion, TenantModels, TenantSummary
from registry.version_table import VersionTable

__all__ = ["AliasStack", "RegistrySnapshot", "resolve_uri", "row_to_version"]

RESOLVED_SIZE = 4096  # resolve answers kept (a few MB at most, whatever the tenant count)


class RegistrySnapshot:
    """Tenant -> versions/aliases map built from the index and kept fresh incrementally."""

    def __init__(self, index: DeltaIndex, root_uri: str | None = None) -> None:
        self._index = index
        # Relative artifact paths resolve against the root this snapshot reads from.
        self._root_uri = root_uri if root_uri is not None else posixpath.dirname(index.index_uri)
        self._lock = threading.Lock()
        self._tenants = TenantIndex()
        self._versions = VersionTable(self._tenants, self._root_uri)
        self._aliases: dict[str, AliasStacks] = {}
        self._seen = {"models": -1, "aliases": -1}
        self._resolved: dict[tuple[str, str], tuple[int, ModelVersion]] = {}
        self._numbers: dict[tuple[str, str], tuple[int, int]] = {}  # resolve_version's
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
            if models.num_rows:
                self._versions.add(models)
            if aliases.num_rows:
                self._apply_aliases(aliases)
            self._seen["models"], self._seen["aliases"] = mv, av
            if changed:
                self.generation += 1
            self.last_refresh_at = time.monotonic()
            self.last_refresh_wall = time.time()
            self.last_refresh_seconds = time.perf_counter() - started
        return changed

    def _apply_aliases(self, aliases: pa.Table) -> None:
        rows = _ordered(aliases)
        names = rows.column("tenant_id").to_pylist()
        numbers = self._tenants.numbers(names).tolist()
        for number, alias, action, version in zip(
                numbers, rows.column("alias").to_pylist(), rows.column("action").to_pylist(),
                rows.column("version").to_pylist(), strict=True):
            stacks = self._aliases.get(alias)
            if stacks is None:
                stacks = self._aliases[alias] = AliasStacks()
            stacks.apply(number, action, version)

    def lag_seconds(self) -> float:
        """Seconds since the snapshot last confirmed it had every committed row."""
        if not self.last_refresh_at:
            return float("inf")
        return time.monotonic() - self.last_refresh_at

    # -- lookups ----------------------------------------------------------------------
    def tenants(self) -> list[str]:
        """Every tenant with at least one version, sorted."""
        return sorted(self._tenants.name(n) for n in self._versions.tenant_numbers().tolist())

    def tenant_count(self) -> int:
        """How many tenants have at least one version: ``len(tenants())`` without building
        the list (status documents ask for it every second)."""
        return self._versions.tenant_count

    def alias_version(self, tenant_id: str, alias: str | Alias = Alias.PRODUCTION) -> int | None:
        """The version ``alias`` points at, or None."""
        return self._current(self._tenants.find(tenant_id), alias)

    def _current(self, number: int | None, alias: str | Alias) -> int | None:
        stacks = self._aliases.get(_alias_name(alias))
        return None if stacks is None or number is None else stacks.current(number)

    def alias_stack(self, tenant_id: str, alias: str | Alias) -> AliasStack:
        """A copy of the alias history of a tenant."""
        stacks = self._aliases.get(_alias_name(alias))
        number = self._tenants.find(tenant_id)
        if stacks is None or number is None:
            return AliasStack()
        return stacks.stack(number)

    def resolve(self, tenant_id: str, alias: str | Alias = Alias.PRODUCTION) -> ModelVersion:
        """The version ``alias`` of a tenant points at.

        Answers of the current generation are kept (bounded), so a tenant asked for again
        costs one dict lookup; a refresh that changes anything retires them all.

        Raises:
            UnknownTenant: no such tenant or no version under that alias.
        """
        name = _alias_name(alias)
        hit = self._resolved.get((tenant_id, name))
        generation = self.generation  # read before the lookups: a refresh after it retires
        if hit is not None and hit[0] == generation:
            return hit[1]
        number = self._tenants.find(tenant_id)
        version = self._current(number, name)
        if version is None:
            raise self._no_alias(tenant_id, name)
        row = self._versions.find(number, version)  # type: ignore[arg-type]  # set with version
        mv = self.version(tenant_id, version) if row is None else self._versions.version_of(row)
        if len(self._resolved) >= RESOLVED_SIZE:
            self._resolved.clear()
        self._resolved[(tenant_id, name)] = (generation, mv)
        return mv

    def resolve_version(self, tenant_id: str, alias: str | Alias = Alias.PRODUCTION) -> int:
        """The version number ``alias`` of a tenant points at, building no
        :class:`ModelVersion` (the request path finds its cached model by this alone);
        answers of the current generation are kept as :meth:`resolve`'s are.

        Raises:
            UnknownTenant: no such tenant or no version under that alias (as
                :meth:`resolve`).
        """
        name = _alias_name(alias)
        hit = self._numbers.get((tenant_id, name))
        generation = self.generation  # read before the lookups: a refresh after it retires
        if hit is not None and hit[0] == generation:
            return hit[1]
        version = self._current(self._tenants.find(tenant_id), name)
        if version is None:
            raise self._no_alias(tenant_id, name)
        if len(self._numbers) >= RESOLVED_SIZE:
            self._numbers.clear()
        self._numbers[(tenant_id, name)] = (generation, version)
        return version

    def _no_alias(self, tenant_id: str, alias: str) -> UnknownTenant:
        if self._has_versions(tenant_id):
            return UnknownTenant(f"tenant {tenant_id!r} has no {alias} model")
        return UnknownTenant(f"unknown tenant {tenant_id!r}")

    def _has_versions(self, tenant_id: str) -> bool:
        number = self._tenants.find(tenant_id)
        return number is not None and bool(self._versions.rows_of(number))

    def version(self, tenant_id: str, version: int) -> ModelVersion:
        """One version of a tenant; raises UnknownTenant/UnknownVersion."""
        number = self._tenants.find(tenant_id)
        row = self._versions.find(number, int(version)) if number is not None else None
        if row is None:
            if not self._has_versions(tenant_id):
                raise UnknownTenant(f"unknown tenant {tenant_id!r}")
            raise UnknownVersion(f"tenant {tenant_id!r} has no version {version}")
        return self._versions.version_of(row)

    def versions(self, tenant_id: str) -> list[ModelVersion]:
        """Every version of a tenant, newest first; raises UnknownTenant."""
        number = self._tenants.find(tenant_id)
        rows = self._versions.rows_of(number) if number is not None else []
        if not rows:
            raise UnknownTenant(f"unknown tenant {tenant_id!r}")
        return [self._versions.version_of(r) for r in reversed(rows)]

    def version_numbers(self, tenant_id: str) -> list[int]:
        """Every version number of a tenant, newest first, building no ModelVersion (gc asks
        this of every tenant); raises UnknownTenant."""
        number = self._tenants.find(tenant_id)
        numbers = self._versions.versions_of(number) if number is not None else []
        if not numbers:
            raise UnknownTenant(f"unknown tenant {tenant_id!r}")
        return numbers[::-1]

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
        numbers, rows = self._versions.latest_rows()
        out = []
        for number, row in zip(numbers.tolist(), rows.tolist(), strict=True):
            latest = self._versions.version_of(row)
            out.append(TenantSummary(latest.tenant_id, latest.shard,
                                     self.alias_version(latest.tenant_id, Alias.PRODUCTION),
                                     self.alias_version(latest.tenant_id, Alias.SHADOW),
                                     latest.version))
        return sorted(out, key=lambda s: s.tenant_id)

    def production_map(self) -> dict[str, ModelVersion]:
        """tenant -> production version, for every tenant that has one."""
        stacks = self._aliases.get(Alias.PRODUCTION.value)
        if stacks is None:
            return {}
        out = {}
        for number in self._versions.tenant_numbers().tolist():
            version = stacks.current(number)
            row = self._versions.find(number, version) if version is not None else None
            if row is not None:
                mv = self._versions.version_of(row)
                out[mv.tenant_id] = mv
        return out

    def all_versions(self) -> Iterable[ModelVersion]:
        """Every version of every tenant."""
        for number in self._versions.tenant_numbers().tolist():
            for row in self._versions.rows_of(number):
                yield self._versions.version_of(row)


_ALIAS_NAMES = {a.value: a.value for a in Alias}  # a member hashes and compares as its value


def _alias_name(alias: str | Alias) -> str:
    """The alias's name; raises ValueError for names that are not an :class:`Alias`."""
    name = _ALIAS_NAMES.get(alias)
    return name if name is not None else Alias(alias).value


def _ordered(aliases: pa.Table) -> pa.Table:
    """Alias events in commit order, however they were read (``set_at`` only breaks ties).

    The change feed says which Delta version committed an event (``_commit_version``); a
    first load reads current files, whose rows carry it (``commit_version``). Rows written
    before that column existed have -1: a first load can only place them before every
    newer event, by ``set_at``.
    """
    order = pa.nulls(aliases.num_rows, pa.int64())
    for name in ("_commit_version", "commit_version"):
        if name in aliases.column_names:
            order = pc.coalesce(order, aliases.column(name).cast(pa.int64()))
    keyed = aliases.append_column("_order", pc.coalesce(order, -1))
    return keyed.sort_by([("_order", "ascending"), ("set_at", "ascending")])
