"""gc never deletes what something still references: aliases, shadow configs, leases, and
anything that became referenced while it was deciding."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.shadow import ConfigStore, ShadowTables, build_config
from registry import AliasMove, Registry
from registry.gc import collect_garbage, shadow_config_versions
from registry.leases import LeaseKeeper, LeaseStore
from registry.storage import FileEntry
from tests.conftest import wait_for

from .conftest import new_version

TENANT = "acme"


def _publish(reg: Registry, data: bytes, n: int, alias: str | None = "production") -> None:
    """Publish ``n`` more versions of TENANT, each moving ``alias`` to it."""
    for _ in range(n):
        run_id = f"r{len(list(Path(reg.root).rglob('_claim.json')))}"
        staged = reg.stage_artifact(TENANT, data, run_id)
        moves = [AliasMove(TENANT, alias, staged.version)] if alias else []
        reg.publish(run_id, [new_version(staged)], moves)


def _on_disk(reg: Registry) -> list[int]:
    root = Path(reg.root, "artifacts")
    return sorted(int(p.name[2:]) for p in root.glob("shard=*/tenant=*/v=*") if p.is_dir())


def test_a_live_lease_keeps_its_run_staged_files_whatever_the_grace(reg: Registry,
                                                                   model_bytes: bytes) -> None:
    _publish(reg, model_bytes, 1)
    reg.leases.write("nightly-1", ttl_s=600)
    reg.stage_artifact(TENANT, model_bytes, "nightly-1")  # staged, not yet published
    reg.stage_artifact("newcomer", model_bytes, "nightly-1")  # a tenant with no version yet
    report = collect_garbage(reg, keep=1, orphan_grace_s=0)
    assert report.orphans_removed == 0
    assert _on_disk(reg) == [1, 1, 2]
    reg.leases.release("nightly-1")
    assert collect_garbage(reg, keep=1, orphan_grace_s=0).orphans_removed == 2
    assert _on_disk(reg) == [1]


def test_an_expired_lease_protects_nothing(reg: Registry, model_bytes: bytes) -> None:
    past = LeaseStore(reg.store, clock=lambda: time.time() - 3600)
    past.write("crashed", ttl_s=600)
    lease_file = Path(reg.root, "leases", "crashed.json")
    old = time.time() - 3600
    os.utime(lease_file, (old, old))  # the store's clock agrees it is an hour old
    reg.stage_artifact(TENANT, model_bytes, "crashed")
    assert reg.leases.live() == {}
    report = collect_garbage(reg, keep=1, orphan_grace_s=0)
    assert report.orphans_removed == 1 and report.leases_expired == 1
    assert not lease_file.exists()


def test_a_lease_written_with_a_slow_clock_lives_by_the_store_clock(reg: Registry) -> None:
    LeaseStore(reg.store, clock=lambda: time.time() - 3600).write("skewed", ttl_s=600)
    assert set(reg.leases.live()) == {"skewed"}


def test_versions_pinned_by_a_lease_are_kept(reg: Registry, model_bytes: bytes) -> None:
    _publish(reg, model_bytes, 4)
    reg.leases.write("scoring", ttl_s=600, pins={TENANT: [1]})
    collect_garbage(reg, keep=1)
    assert _on_disk(reg) == [1, 3, 4]  # 4 newest/production, 3 rollback target, 1 pinned


def test_every_alias_and_the_rollback_target_are_kept(reg: Registry, model_bytes: bytes
                                                      ) -> None:
    _publish(reg, model_bytes, 3)  # production stack 1, 2, 3
    _publish(reg, model_bytes, 1, alias="shadow")  # v4 is shadow
    _publish(reg, model_bytes, 2, alias=None)  # v5, v6 unaliased; v6 newest
    reg.promote(TENANT, 1, alias="shadow")  # shadow moves to v1; v4 now unreferenced
    collect_garbage(reg, keep=1)
    assert _on_disk(reg) == [1, 2, 3, 6]


def test_versions_named_by_a_shadow_config_are_kept(reg: Registry, model_bytes: bytes) -> None:
    _publish(reg, model_bytes, 5)
    configs = ConfigStore(ShadowTables.for_registry(reg))
    configs.set(build_config(TENANT, 0.5, version=1))
    configs.set(build_config("other", 0.5))  # no version: follows the shadow alias
    assert shadow_config_versions(reg) == {TENANT: 1}
    collect_garbage(reg, keep=1)
    assert _on_disk(reg) == [1, 4, 5]
    configs.set(build_config(TENANT, 0.5, version=4))  # the newest row wins
    configs.clear("other")
    collect_garbage(reg, keep=1)
    assert _on_disk(reg) == [4, 5]


def test_cleared_shadow_config_protects_nothing(reg: Registry, model_bytes: bytes) -> None:
    _publish(reg, model_bytes, 3)
    configs = ConfigStore(ShadowTables.for_registry(reg))
    configs.set(build_config(TENANT, 0.5, version=1))
    configs.clear(TENANT)
    assert shadow_config_versions(reg) == {}
    collect_garbage(reg, keep=1)
    assert _on_disk(reg) == [2, 3]


def test_the_index_is_read_again_just_before_deleting(reg: Registry, model_bytes: bytes,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A promote and a publish that land while gc walks the artifacts keep their versions."""
    _publish(reg, model_bytes, 3)  # v3 production, v2 rollback target, v1 unreferenced
    reg.promote(TENANT, 2)  # production stack 1, 2, 3, 2: v3 rollback target, v1 candidate
    late = reg.stage_artifact(TENANT, model_bytes, "late")  # unleased claim: orphan candidate
    other = Registry.open(reg.root)
    real_dirs = reg.store.dirs_at

    def list_then_race(rel: str, depth: int) -> Iterator[str]:
        yield from real_dirs(rel, depth)
        if rel == "artifacts":  # another process, while gc decides
            other.promote(TENANT, 1)
            other.publish("late", [new_version(late)])

    monkeypatch.setattr(reg.store, "dirs_at", list_then_race)
    report = collect_garbage(reg, keep=1, orphan_grace_s=0)
    assert report.versions_removed == 0 and report.orphans_removed == 0
    assert _on_disk(reg) == [1, 2, 3, 4]
    assert Registry.open(reg.root).get(TENANT).production.version == 1  # type: ignore[union-attr]  # set above


def test_lease_keeper_renews_then_releases(reg: Registry) -> None:
    keeper = LeaseKeeper(reg.leases, "nightly-2", ttl_s=2.0, renew_s=0.05).start()
    try:
        first = reg.leases.live()["nightly-2"].expires_at
        wait_for(lambda: reg.leases.live()["nightly-2"].expires_at > first, timeout=10,
                 what=lambda: "(the lease was never renewed)")
        keeper.pin({TENANT: [3, 1]})
        assert reg.leases.live()["nightly-2"].pins == {TENANT: (1, 3)}
    finally:
        keeper.stop()
    assert reg.leases.live() == {}
    assert not Path(reg.root, "leases", "nightly-2.json").exists()


def test_gc_reads_only_directory_listings_and_keeps_an_empty_or_foreign_directory(
        reg: Registry, model_bytes: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files are read only in the directories a verdict needs (the orphan candidates and
    the versions it removes); a version directory with no file yet (a claimer between
    creating it and claiming) and one that is not a version are left alone."""
    _publish(reg, model_bytes, 3)  # v1 unreferenced, v2 rollback target, v3 production
    tdir = Path(reg.root, "artifacts").glob("shard=*/tenant=acme").__next__()
    (tdir / "v=9").mkdir()
    (tdir / "notes").mkdir()
    (tdir / "notes" / "x.txt").write_text("not a version")
    real_walk = reg.store.walk
    walked: list[str] = []

    def recorded(rel: str) -> Iterator[FileEntry]:
        walked.append(rel)
        return real_walk(rel)

    monkeypatch.setattr(reg.store, "walk", recorded)
    report = collect_garbage(reg, keep=1, orphan_grace_s=0, compact=False)
    assert report.versions_removed == 1 and report.orphans_removed == 0
    assert report.bytes_freed > len(model_bytes)  # its artifact, checksum and claim
    assert _on_disk(reg) == [2, 3, 9] and (tdir / "notes" / "x.txt").exists()
    assert sorted(w.rsplit("/", 1)[-1] for w in walked if w.startswith("artifacts")) == \
        ["v=1", "v=9"]
