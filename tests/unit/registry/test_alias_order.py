"""Alias events resolve by commit order on a first load and on refresh alike.

Two writers whose clocks disagree by an hour either way must not change what a replica
serves: only the order in which their commits landed counts.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from registry import Registry, index_rows
from registry.gc import collect_garbage
from registry.index import TABLES
from registry.snapshot import RegistrySnapshot

from .conftest import new_version

TENANT = "acme"


def _versions(reg: Registry, data: bytes, n: int) -> None:
    for i in range(n):
        staged = reg.stage_artifact(TENANT, data, f"r{i}")
        reg.publish(f"r{i}", [new_version(staged)])


def _skewed(monkeypatch: pytest.MonkeyPatch, hours: float) -> None:
    """Make every registry writer in this process read a clock ``hours`` off."""
    monkeypatch.setattr(index_rows, "now",
                        lambda: datetime.now(UTC) + timedelta(hours=hours))


def _state(snap: RegistrySnapshot) -> tuple[list[int], list[int]]:
    return (snap.alias_stack(TENANT, "production").versions,
            snap.alias_stack(TENANT, "shadow").versions)


def test_skewed_writers_cold_load_equals_incremental(reg: Registry, model_bytes: bytes,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _versions(reg, model_bytes, 3)
    running = reg.new_snapshot()  # a replica that follows every commit
    ahead, behind = Registry.open(reg.root), Registry.open(reg.root)
    _skewed(monkeypatch, +1)
    ahead.promote(TENANT, 1)
    running.refresh()
    _skewed(monkeypatch, -1)
    behind.promote(TENANT, 2)  # committed later, stamped two hours earlier
    behind.promote(TENANT, 1, alias="shadow")
    running.refresh()
    _skewed(monkeypatch, +1)
    ahead.promote(TENANT, 3)
    _skewed(monkeypatch, -1)
    behind.rollback(TENANT)
    running.refresh()
    batched = Registry.open(reg.root).new_snapshot()  # saw none of it: one cold load
    expected = ([1, 2], [1])
    assert _state(running) == expected
    assert _state(batched) == expected
    assert running.alias_version(TENANT) == batched.alias_version(TENANT) == 2


def test_one_refresh_over_many_commits_and_after_compaction(reg: Registry, model_bytes: bytes,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    _versions(reg, model_bytes, 2)
    running = reg.new_snapshot()
    _skewed(monkeypatch, +1)
    reg.promote(TENANT, 1)
    _skewed(monkeypatch, -1)
    reg.promote(TENANT, 2)
    running.refresh()  # both commits through one change-feed read
    collect_garbage(reg, keep=5)  # compacts the alias files into one
    cold = Registry.open(reg.root).new_snapshot()
    assert running.alias_version(TENANT) == cold.alias_version(TENANT) == 2
    assert _state(running) == _state(cold) == ([1, 2], [])


def test_legacy_alias_table_gains_the_commit_column(tmp_path: Path, reg: Registry,
                                                    model_bytes: bytes) -> None:
    """A registry whose aliases table predates ``commit_version`` keeps working."""
    _versions(reg, model_bytes, 2)
    aliases = f"{reg.root}/index/aliases"
    shutil.rmtree(aliases)
    legacy = pa.schema([f for f in TABLES["aliases"] if f.name != "commit_version"])
    DeltaTable.create(aliases, legacy, partition_by=["shard"],
                      configuration={"delta.enableChangeDataFeed": "true"})
    write_deltalake(aliases, pa.table({
        "tenant_id": [TENANT], "shard": pa.array([reg.shard_of(TENANT)], pa.int32()),
        "alias": ["production"], "version": pa.array([1], pa.int64()), "action": ["set"],
        "reason": ["old"], "run_id": pa.array([None], pa.string()),
        "set_at": pa.array([datetime.now(UTC) + timedelta(hours=5)], legacy.field("set_at").type),
    }, schema=legacy), mode="append")
    again = Registry.open(reg.root)
    running = again.new_snapshot()
    assert running.alias_version(TENANT) == 1
    again.promote(TENANT, 2)  # earlier clock than the legacy row, later commit
    running.refresh()
    cold = Registry.open(reg.root).new_snapshot()
    assert running.alias_version(TENANT) == cold.alias_version(TENANT) == 2
    assert "commit_version" in {f.name for f in DeltaTable(aliases).schema().fields}


def test_racing_alias_writers_each_record_their_commit_version(reg: Registry,
                                                               model_bytes: bytes) -> None:
    """A writer that loses the race rebuilds its rows for the next version."""
    _versions(reg, model_bytes, 2)
    slow = Registry.open(reg.root)
    slow.index.table("aliases")  # a handle that will be stale when it commits
    reg.promote(TENANT, 1)
    slow.promote(TENANT, 2)
    rows = DeltaTable(f"{reg.root}/index/aliases").load_cdf(starting_version=0)
    table = pa.RecordBatchReader.from_stream(rows).read_all().to_pylist()
    assert table and all(r["commit_version"] == r["_commit_version"] for r in table)
    assert reg.new_snapshot().alias_version(TENANT) == 2
