"""The console's in-memory tenant index: search, sort, paginate, follow the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.console.index import TenantIndex
from registry import AliasMove, NewVersion, Registry, StagedArtifact
from registry.errors import UnknownTenant


def _publish_direct(reg: Registry, tenants: list[str], run_id: str) -> None:
    """Index rows without artifacts: the console never reads artifacts."""
    staged = [StagedArtifact(t, reg.shard_of(t), 1,
                             reg.store.uri(f"artifacts/shard={reg.shard_of(t):02d}/tenant={t}"
                                           "/v=1/model.ubj"), "0" * 64, 10, run_id)
              for t in tenants]
    reg.publish(run_id, [NewVersion(s, ("f",), {"auc": 0.5 + i / 1000, "logloss": 0.3})
                         for i, s in enumerate(staged)],
                [AliasMove(s.tenant_id, "production", 1) for s in staged])


@pytest.fixture()
def index(tmp_path: Path) -> tuple[Registry, TenantIndex]:
    reg = Registry.create(str(tmp_path / "registry"), num_shards=4)
    _publish_direct(reg, [f"tenant-{i:04d}" for i in range(250)], "bulk")
    idx = TenantIndex(reg.new_snapshot())
    idx.refresh()
    return reg, idx


def test_pages_cover_every_tenant_once(index: Any) -> None:
    _, idx = index
    seen: list[str] = []
    first = idx.page(per_page=40)
    assert (first.total, first.pages, first.tenants) == (250, 7, 250)
    for n in range(1, first.pages + 1):
        seen += [r.tenant_id for r in idx.page(page=n, per_page=40).rows]
    assert seen == sorted(seen) and len(set(seen)) == 250
    assert idx.page(page=99, per_page=40).page == 7  # clamped to the last page


def test_search_and_sort(index: Any) -> None:
    _, idx = index
    hits = idx.page(q="TENANT-001", per_page=100)
    assert hits.total == 10 and all("tenant-001" in r.tenant_id for r in hits.rows)
    best = idx.page(sort="auc", desc=True, per_page=3).rows
    assert [r.tenant_id for r in best] == ["tenant-0249", "tenant-0248", "tenant-0247"]
    assert idx.page(sort="no-such-column").sort == "tenant"
    assert idx.page(q="nobody").rows == () and idx.page(q="nobody").pages == 1


def test_follows_publishes_and_alias_moves(index: Any) -> None:
    reg, idx = index
    generation = idx.view.generation
    assert idx.refresh() is False and idx.view.generation == generation  # nothing new
    _publish_direct(reg, ["zeta"], "late")
    reg.clear_alias("tenant-0000", "production", actor="eve", reason="test")
    assert idx.refresh() is True
    assert idx.tenant("zeta").row.production == 1
    assert idx.tenant("tenant-0000").row.production is None
    assert idx.page(sort="production", per_page=1, page=251).rows[0].tenant_id == \
        "tenant-0000"  # None sorts last
    with pytest.raises(UnknownTenant):
        idx.tenant("nobody")


def test_a_shared_snapshot_refreshed_by_a_writer_still_rebuilds(tmp_path: Path) -> None:
    reg = Registry.create(str(tmp_path / "registry"), num_shards=2)
    _publish_direct(reg, ["a", "b"], "one")
    idx = TenantIndex(reg.snapshot(refresh=False))
    idx.refresh()
    _publish_direct(reg, ["c"], "two")
    reg.snapshot()  # the writer refreshes the shared snapshot first
    assert idx.refresh() is True and idx.view.entries.keys() == {"a", "b", "c"}
