"""Garbage collection: old versions, orphan artifacts, index compaction and vacuum."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

from registry.registry import Registry
from registry.snapshot import RegistrySnapshot
from registry.types import Alias

__all__ = ["GcReport", "collect_garbage", "protected_versions"]


@dataclass(frozen=True, slots=True)
class GcReport:
    """What one ``gc`` pass removed and compacted."""

    versions_removed: int
    orphans_removed: int
    bytes_freed: int
    files_compacted: int
    files_vacuumed: int

    def to_json(self) -> dict[str, int]:
        """The ``registry gc --json`` document."""
        return {
            "versions_removed": self.versions_removed,
            "orphans_removed": self.orphans_removed,
            "bytes_freed": self.bytes_freed,
            "files_compacted": self.files_compacted,
            "files_vacuumed": self.files_vacuumed,
        }


def protected_versions(snap: RegistrySnapshot, tenant_id: str, keep: int) -> set[int]:
    """Versions of a tenant gc must keep: the newest ``keep``, every alias, rollback target."""
    newest = [m.version for m in snap.versions(tenant_id)[: max(keep, 1)]]
    keep_set = set(newest)
    for alias in Alias:
        stack = snap.alias_stack(tenant_id, alias)
        if stack.current is not None:
            keep_set.add(stack.current)
        if alias is Alias.PRODUCTION and stack.previous is not None:
            keep_set.add(stack.previous)
    return keep_set


def collect_garbage(reg: Registry, keep: int = 5, orphan_grace_s: float = 3600.0,
                    vacuum_hours: int = 168, compact: bool = True) -> GcReport:
    """Delete unprotected old artifacts and orphans, then compact and vacuum the index.

    Index rows of removed versions stay (they are the metrics history); only their
    artifacts go. An orphan is a claimed version directory that no ``models`` row names,
    older than ``orphan_grace_s`` (so a run that is publishing right now is left alone).

    Args:
        reg: the registry.
        keep: newest versions to keep per tenant (at least 1).
        orphan_grace_s: minimum age of an uncommitted claim before it is removed.
        vacuum_hours: Delta vacuum retention; files tombstoned longer ago are deleted.
        compact: compact small index files and write a checkpoint.
    """
    snap = reg.snapshot()
    committed: dict[str, set[int]] = defaultdict(set)
    for mv in snap.all_versions():
        committed[mv.tenant_id].add(mv.version)
    sizes: dict[str, int] = defaultdict(int)
    mtimes: dict[str, float] = {}
    for entry in reg.store.walk("artifacts"):
        parts = entry.path.split("/")
        if len(parts) != 5 or not parts[3].startswith("v="):
            continue
        vdir = "/".join(parts[:4])
        sizes[vdir] += entry.size
        mtimes[vdir] = max(mtimes.get(vdir, 0.0), entry.mtime)
    now = time.time()
    removed = orphans = freed = 0
    protected_cache: dict[str, set[int]] = {}
    for vdir, size in sizes.items():
        tenant = vdir.split("/")[2].removeprefix("tenant=")
        version = int(vdir.split("/")[3].removeprefix("v="))
        if version not in committed.get(tenant, ()):
            if now - mtimes[vdir] >= orphan_grace_s:
                reg.store.delete_dir(vdir)
                orphans += 1
                freed += size
            continue
        if tenant not in protected_cache:
            protected_cache[tenant] = protected_versions(snap, tenant, keep)
        if version not in protected_cache[tenant]:
            reg.store.delete_dir(vdir)
            removed += 1
            freed += size
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
    return GcReport(removed, orphans, freed, compacted, vacuumed)
