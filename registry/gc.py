"""Garbage collection: old versions, orphan artifacts, expired leases, index compaction.

A version directory is deleted only if nothing references it, checked twice: once to pick
candidates and again, from a fresh read of the index, the shadow configs and the leases,
just before deleting (so a version promoted or published meanwhile is kept). References:

- the newest ``keep`` versions of each tenant;
- every alias (``production``, ``shadow``) and production's rollback target;
- the version each tenant's current shadow config names (``<root>/shadow/config``);
- every claim, staged artifact and version of a run holding a live lease, and every
  version a live lease pins (see :mod:`registry.leases`);
- an uncommitted claim younger than ``orphan_grace_s``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from deltalake import DeltaTable, QueryBuilder
from deltalake.exceptions import TableNotFoundError

from registry.delta import to_arrow
from registry.errors import NotFound, RegistryError
from registry.leases import Clock, Lease
from registry.registry import Registry
from registry.snapshot import RegistrySnapshot
from registry.types import Alias

__all__ = ["GcReport", "collect_garbage", "protected_versions", "shadow_config_versions"]


@dataclass(frozen=True, slots=True)
class GcReport:
    """What one ``gc`` pass removed and compacted."""

    versions_removed: int
    orphans_removed: int
    bytes_freed: int
    files_compacted: int
    files_vacuumed: int
    leases_expired: int = 0

    def to_json(self) -> dict[str, int]:
        """The ``registry gc --json`` document."""
        return {
            "versions_removed": self.versions_removed,
            "orphans_removed": self.orphans_removed,
            "bytes_freed": self.bytes_freed,
            "files_compacted": self.files_compacted,
            "files_vacuumed": self.files_vacuumed,
            "leases_expired": self.leases_expired,
        }


def protected_versions(snap: RegistrySnapshot, tenant_id: str, keep: int) -> set[int]:
    """Versions of a tenant gc must keep: the newest ``keep``, every alias, rollback target."""
    keep_set = set(snap.version_numbers(tenant_id)[: max(keep, 1)])
    for alias in Alias:
        stack = snap.alias_stack(tenant_id, alias)
        if stack.current is not None:
            keep_set.add(stack.current)
        if alias is Alias.PRODUCTION and stack.previous is not None:
            keep_set.add(stack.previous)
    return keep_set


# The newest config row per tenant, as replicas read it (engine.shadow.config).
_SHADOW_CONFIGS = (
    "SELECT tenant_id, version FROM ("
    "SELECT tenant_id, version, cleared, "
    "ROW_NUMBER() OVER (PARTITION BY tenant_id ORDER BY set_at DESC) AS newest FROM t) "
    "WHERE newest = 1 AND NOT cleared AND version IS NOT NULL")


def shadow_config_versions(reg: Registry) -> dict[str, int]:
    """tenant -> the version its current shadow config names (configs naming none skipped).

    Raises:
        RegistryError: the ``shadow/config`` table exists but cannot be read.
    """
    try:
        dt = DeltaTable(reg.store.uri("shadow/config"), storage_options=reg.storage_options)
    except TableNotFoundError:
        return {}
    try:
        rows = to_arrow(QueryBuilder().register("t", dt).execute(_SHADOW_CONFIGS)).to_pylist()
    except Exception as exc:  # DataFusion/Delta errors: do not collect blind
        raise RegistryError(f"cannot read the shadow configs: {exc}") from exc
    return {r["tenant_id"]: int(r["version"]) for r in rows}


@dataclass(slots=True)
class _VersionDir:
    """One ``artifacts/shard=NN/tenant=T/v=N`` directory as the listing found it; its size
    and age are read only when a verdict needs them (most directories are kept unread)."""

    path: str
    tenant: str
    version: int
    size: int = -1
    mtime: float = -1.0

    def measure(self, reg: Registry) -> _VersionDir:
        """Read the total size and the newest modification time of its files (once)."""
        if self.size < 0:
            entries = list(reg.store.walk(self.path))
            self.size = sum(e.size for e in entries)
            # no file yet: a claimer may be about to write one, so it counts as new
            self.mtime = max((e.mtime for e in entries), default=float("inf"))
        return self


@dataclass
class _References:
    """Everything that keeps a version, read at one instant."""

    snap: RegistrySnapshot
    keep: int
    shadow: dict[str, int]
    leases: dict[str, Lease]
    _protected: dict[str, set[int]] = field(default_factory=dict)
    _known: dict[str, set[int]] = field(default_factory=dict)

    @classmethod
    def read(cls, reg: Registry, keep: int, now: float) -> _References:
        # Leases first: a run that starts after this read stages versions newer than any
        # candidate picked from the walk before it, and those are re-checked anyway.
        leases = reg.leases.live(now)
        return cls(reg.snapshot(refresh=True), keep, shadow_config_versions(reg), leases)

    def _indexed(self, tenant: str) -> set[int]:
        """The versions of ``tenant`` the index has rows for (numbers only, per tenant once)."""
        known = self._known.get(tenant)
        if known is None:
            try:
                known = set(self.snap.version_numbers(tenant))
            except NotFound:
                known = set()
            self._known[tenant] = known
        return known

    def pinned(self, tenant: str, version: int, run_id: str | None) -> bool:
        """True if a live lease holds the run or pins the version."""
        return (run_id is not None and run_id in self.leases) or \
            any(version in lease.pins.get(tenant, ()) for lease in self.leases.values())

    def verdict(self, reg: Registry, vdir: _VersionDir, now: float,
                orphan_grace_s: float) -> str | None:
        """``"old"``, ``"orphan"`` or None (keep)."""
        if vdir.version in self._indexed(vdir.tenant):
            if self.leases and self.pinned(vdir.tenant, vdir.version,
                                           self.snap.version(vdir.tenant, vdir.version).run_id):
                return None
            if vdir.tenant not in self._protected:
                kept = protected_versions(self.snap, vdir.tenant, self.keep)
                if vdir.tenant in self.shadow:
                    kept.add(self.shadow[vdir.tenant])
                self._protected[vdir.tenant] = kept
            return None if vdir.version in self._protected[vdir.tenant] else "old"
        if now - vdir.measure(reg).mtime < orphan_grace_s:
            return None
        if self.pinned(vdir.tenant, vdir.version, _claim_run(reg, vdir.path)):
            return None
        return "orphan"


def _claim_run(reg: Registry, vdir: str) -> str | None:
    try:
        return str(json.loads(reg.store.read(f"{vdir}/_claim.json")).get("run_id")) or None
    except (FileNotFoundError, ValueError, AttributeError):
        return None


def _version_dirs(reg: Registry) -> list[_VersionDir]:
    """Every version directory, from directory listings alone (no file is read)."""
    out = []
    for vdir in reg.store.dirs_at("artifacts", 3):
        _, shard, tenant, version = vdir.split("/")
        if shard.startswith("shard=") and tenant.startswith("tenant=") \
                and version.startswith("v=") and version[2:].isdigit():
            out.append(_VersionDir(vdir, tenant.removeprefix("tenant="), int(version[2:])))
    return out


def collect_garbage(reg: Registry, keep: int = 5, orphan_grace_s: float = 3600.0,
                    vacuum_hours: int = 168, compact: bool = True,
                    clock: Clock = time.time) -> GcReport:
    """Delete unreferenced old artifacts and orphans, then compact and vacuum the index.

    Index rows of removed versions stay (they are the metrics history); only their
    artifacts go. An orphan is a version directory that no ``models`` row names, older
    than ``orphan_grace_s`` and not held by a live lease. Candidates are re-checked
    against a fresh read of every reference just before deletion.

    Args:
        reg: the registry.
        keep: newest versions to keep per tenant (at least 1).
        orphan_grace_s: minimum age of an uncommitted claim of an unleased run before it
            is removed.
        vacuum_hours: Delta vacuum retention; files tombstoned longer ago are deleted.
        compact: compact small index files and write a checkpoint.
        clock: wall-clock time (lease expiry, orphan age).

    Returns:
        What was removed and compacted.
    """
    refs = _References.read(reg, keep, clock())
    candidates = [v for v in _version_dirs(reg)
                  if refs.verdict(reg, v, clock(), orphan_grace_s) is not None]
    removed = orphans = freed = 0
    if candidates:
        fresh = _References.read(reg, keep, clock())
        for vdir in candidates:
            verdict = fresh.verdict(reg, vdir, clock(), orphan_grace_s)
            if verdict is None:
                continue
            freed += vdir.measure(reg).size
            reg.store.delete_dir(vdir.path)
            removed += verdict == "old"
            orphans += verdict == "orphan"
    leases_expired = reg.leases.remove_expired(clock())
    compacted = vacuumed = 0
    if compact:
        for name in ("models", "aliases", "runs"):
            dt = reg.index.table(name)
            metrics = dt.optimize.compact()
            compacted += int(metrics.get("numFilesRemoved", 0))
            dt.create_checkpoint()
            dt.cleanup_metadata()
            vacuumed += len(dt.vacuum(retention_hours=vacuum_hours, dry_run=False,
                                      enforce_retention_duration=False))
    return GcReport(removed, orphans, freed, compacted, vacuumed, leases_expired)
