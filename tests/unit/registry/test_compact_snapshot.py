"""The columnar snapshot answers exactly what folding the index rows into objects answers.

The reference is the plain fold: every ``models`` row decoded by ``row_to_version`` into a
dict by (tenant, version), every alias event folded into an ``AliasStack`` in commit
order. Cases: several runs, a shadow alias, a rollback, a clear, legacy rows (absolute
artifact path, integer metrics, odd checksum), a categorical version; and an incremental
refresh after each step equals a cold load at the end.
"""

from __future__ import annotations

import json
import pickle
import random
from typing import Any

import pyarrow as pa
import pytest

from registry import AliasMove, NewVersion, Registry
from registry.alias_state import AliasStack, AliasStacks
from registry.errors import RegistryError, UnknownTenant, UnknownVersion
from registry.index import TABLES
from registry.rows import row_to_version
from registry.snapshot import RegistrySnapshot
from registry.tenant_index import TenantIndex
from registry.types import Alias
from registry.version_table import VersionTable

from .conftest import FEATURES, new_version

TENANTS = ("acme", "globex", "initech", "umbrella")


def _reference(reg: Registry) -> tuple[dict[tuple[str, int], Any], dict[tuple[str, str], list]]:
    """What the snapshot should hold, folded the plain way from the index's rows."""
    versions = {}
    for row in reg.index.query("models").to_pylist():
        mv = row_to_version(row, reg.store.uri(""))
        versions[(mv.tenant_id, mv.version)] = mv
    stacks: dict[tuple[str, str], AliasStack] = {}
    rows = reg.index.query("aliases").to_pylist()
    rows.sort(key=lambda r: (r["commit_version"], r["set_at"]))
    for r in rows:
        stacks.setdefault((r["tenant_id"], r["alias"]), AliasStack()).apply(r["action"],
                                                                           r["version"])
    return versions, {k: s.versions for k, s in stacks.items()}


def _assert_matches(snap: RegistrySnapshot, reg: Registry) -> None:
    versions, stacks = _reference(reg)
    tenants = sorted({t for t, _ in versions})
    assert snap.tenants() == tenants
    assert sorted(((m.tenant_id, m.version), m) for m in snap.all_versions()) == \
        sorted(versions.items())
    for tid in tenants:
        mine = sorted(v for t, v in versions if t == tid)[::-1]
        assert [m.version for m in snap.versions(tid)] == mine
        for version in mine:
            assert snap.version(tid, version) == versions[(tid, version)]
        with pytest.raises(UnknownVersion):
            snap.version(tid, 99)
        for alias in Alias:
            expected = stacks.get((tid, alias.value), [])
            assert snap.alias_stack(tid, alias).versions == expected
            assert snap.alias_version(tid, alias) == (expected[-1] if expected else None)
            if expected:
                assert snap.resolve(tid, alias) == versions[(tid, expected[-1])]
            else:
                with pytest.raises(UnknownTenant, match="has no"):
                    snap.resolve(tid, alias)
    production = {t: versions[(t, s[-1])] for (t, a), s in stacks.items()
                  if a == "production" and s}
    assert snap.production_map() == production
    assert [(s.tenant_id, s.latest_version, s.production_version) for s in snap.summaries()] \
        == [(t, max(v for u, v in versions if u == t),
             production[t].version if t in production else None) for t in tenants]
    with pytest.raises(UnknownTenant, match="unknown tenant"):
        snap.resolve("nobody")


def _run(reg: Registry, run_id: str, data: bytes, tenants: tuple[str, ...],
         alias: str = "production") -> None:
    staged = [reg.stage_artifact(t, data, run_id) for t in tenants]
    reg.publish(run_id, [new_version(s, auc=0.7 + 0.01 * i) for i, s in enumerate(staged)],
                [AliasMove(s.tenant_id, alias, s.version) for s in staged])


def _categorical(reg: Registry, data: bytes) -> None:
    staged = reg.stage_artifact("initech", data, "cats")
    reg.publish("cats", [NewVersion(staged, FEATURES, {"auc": 0.9}, objective="multi:softprob",
                                    num_class=3, feature_types=("float", "categorical", "float"),
                                    params={"categories": {"age_days": ["a", "b"]}})])


def _legacy(reg: Registry, tenant: str, version: int, **extra: Any) -> None:
    row: dict[str, Any] = {f.name: None for f in TABLES["models"]}
    row.update(tenant_id=tenant, shard=reg.shard_of(tenant), version=version,
               artifact_uri=f"/elsewhere/{tenant}/model.ubj", sha256="ABC", size_bytes=1,
               feature_names=["amount"], run_id="legacy", metrics_json=json.dumps({"n": 3}),
               created_at=reg.index.query("models").column("created_at")[0].as_py())
    row.update(extra)
    reg.index.append("models", pa.Table.from_pylist([row], TABLES["models"]))


STEPS = (
    lambda reg, data: _run(reg, "r1", data, TENANTS[:3]),
    lambda reg, data: _run(reg, "r2", data, TENANTS),
    lambda reg, data: _run(reg, "r3", data, TENANTS[:2], alias="shadow"),
    lambda reg, data: reg.promote("acme", 3),  # shadow promoted: shadow cleared too
    lambda reg, data: reg.rollback("globex"),
    lambda reg, data: reg.clear_alias("initech", "production"),
    lambda reg, data: _categorical(reg, data),
    lambda reg, data: _legacy(reg, "umbrella", 7),
    lambda reg, data: _legacy(reg, "hooli", 1),  # a tenant with only a legacy row
)


def test_incremental_refresh_equals_cold_load_equals_the_plain_fold(
        reg: Registry, model_bytes: bytes) -> None:
    running = reg.new_snapshot()
    for step in STEPS:
        step(reg, model_bytes)
        assert running.refresh()
        _assert_matches(running, reg)
    cold = Registry.open(reg.root).new_snapshot()
    _assert_matches(cold, reg)
    assert not running.refresh()  # nothing new: nothing changed


def test_a_row_read_again_replaces_the_earlier_one(reg: Registry, model_bytes: bytes) -> None:
    _run(reg, "r1", model_bytes, ("acme",))
    table = VersionTable(TenantIndex(), reg.store.uri(""))
    rows = reg.index.query("models")
    table.add(rows)
    table.add(rows.set_column(rows.schema.get_field_index("size_bytes"), "size_bytes",
                              pa.array([123], pa.int64())))
    assert len(table) == 2
    assert [table.version_of(r).size_bytes for r in table.rows_of(0)] == [123]
    bad = rows.set_column(rows.schema.get_field_index("version"), "version",
                          pa.array([2**32], pa.int64()))
    with pytest.raises(RegistryError, match="outside"):
        table.add(bad)


def test_alias_stacks_fold_like_alias_stack() -> None:
    rng = random.Random(7)
    stacks, plain = AliasStacks(), {t: AliasStack() for t in range(5)}
    for _ in range(2000):
        tenant = rng.randrange(5)
        action = rng.choice(("set", "set", "set", "rollback", "clear"))
        version = rng.randrange(1, 6) if action == "set" else None
        stacks.apply(tenant, action, version)
        plain[tenant].apply(action, version)
        assert stacks.stack(tenant).versions == plain[tenant].versions
        assert stacks.current(tenant) == plain[tenant].current
    assert stacks.current(99) is None and stacks.stack(99).versions == []


def test_tenant_index_numbers_finds_and_pickles() -> None:
    index = TenantIndex()
    ids = [f"t{i}" for i in range(1000)]
    assert index.numbers(ids[:10] + ids[:3]).tolist() == list(range(10)) + [0, 1, 2]
    assert index.numbers(ids).tolist() == list(range(1000))
    assert [index.find(t) for t in ("t0", "t999", "t1000", "")] == [0, 999, None, None]
    assert index.name(42) == "t42" and index.names() == ids
    again = pickle.loads(pickle.dumps(index))  # hashes are per process: rebuilt on load
    assert again.find("t500") == 500 and again.names() == ids


def test_a_kept_resolve_answer_is_retired_by_a_refresh_that_moves_the_alias(
        reg: Registry, model_bytes: bytes) -> None:
    _run(reg, "r1", model_bytes, ("acme",))
    snap = reg.new_snapshot()
    assert snap.resolve("acme").version == 1
    assert snap.resolve("acme", "production") is snap.resolve("acme")  # kept
    _run(reg, "r2", model_bytes, ("acme",))
    assert snap.resolve("acme").version == 1  # not refreshed yet
    snap.refresh()
    assert snap.resolve("acme").version == 2
    reg.rollback("acme")
    snap.refresh()
    assert snap.resolve("acme", Alias.PRODUCTION).version == 1
    with pytest.raises(ValueError, match="not a valid Alias"):
        snap.resolve("acme", "staging")


def test_value_codes_tell_lists_apart_whatever_they_hold() -> None:
    from registry.row_columns import value_codes

    lists = pa.array([["a", "b"], ["a\x1fb"], None, [], ["a", "b"], ["a\\u", "b"],
                      ["a\x1f", "b"], ["a", "\x1fb"]])
    codes, first = value_codes(lists)
    assert codes[0] == codes[4] and codes[2] == -1
    assert len(set(codes.tolist())) == 7  # every other list differs from every other
    assert [int(codes[r]) for r in first] == list(range(len(first)))  # a row of each code


def test_digests_take_lowercase_hex_only() -> None:
    import hashlib

    from registry.row_columns import digests

    good = hashlib.sha256(b"x").hexdigest()
    raw, ok = digests(pa.array([good, good.upper(), None, "z" * 64, good[:-1]]))
    assert ok.tolist() == [True, False, False, False, False]
    assert raw[0].tobytes().hex() == good


def test_version_numbers_match_versions(reg: Registry, model_bytes: bytes) -> None:
    for step in STEPS[:3]:
        step(reg, model_bytes)
    snap = reg.snapshot()
    for tid in snap.tenants():
        assert snap.version_numbers(tid) == [m.version for m in snap.versions(tid)]
    with pytest.raises(UnknownTenant):
        snap.version_numbers("nobody")


def test_tenant_index_tells_apart_ids_whose_hashes_collide(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from registry import tenant_index

    monkeypatch.setattr(tenant_index, "_hash", len)  # every id of a length collides
    index = TenantIndex()
    assert index.numbers(["ab", "cd", "x", "ab"]).tolist() == [0, 1, 2, 0]
    assert index.numbers(["cd", "ef", "ab"]).tolist() == [1, 3, 0]
    assert [index.find(t) for t in ("ab", "cd", "ef", "gh", "x", "y")] == [0, 1, 3, None, 2,
                                                                           None]


def test_tenant_count_is_the_number_of_tenants(reg: Registry, model_bytes: bytes) -> None:
    snap = reg.new_snapshot()
    assert snap.tenant_count() == len(snap.tenants()) == 0
    for step in STEPS:
        step(reg, model_bytes)
        snap.refresh()
        assert snap.tenant_count() == len(snap.tenants())
    assert snap.tenant_count() == 5
