from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from deltalake import DeltaTable

from registry import AliasMove, PublishState, Registry
from registry.errors import (
    ChecksumMismatch,
    Conflict,
    InvalidTenantId,
    RegistryNotFound,
    UnknownTenant,
)
from registry.gc import collect_garbage

from .conftest import FEATURES, new_version, train_tiny


def publish_one(reg: Registry, run_id: str, tenants: list[str], data: bytes,
                alias: str | None = "production") -> list[int]:
    staged = [reg.stage_artifact(t, data, run_id) for t in tenants]
    moves = [AliasMove(s.tenant_id, alias, s.version) for s in staged] if alias else []
    reg.publish(run_id, [new_version(s) for s in staged], moves, {"date": "2026-11-27"})
    return [s.version for s in staged]


def test_create_is_idempotent_and_guards_shard_count(reg: Registry) -> None:
    again = Registry.create(reg.root, 4)
    assert again.num_shards == 4
    with pytest.raises(Conflict):
        Registry.create(reg.root, 8)
    with pytest.raises(RegistryNotFound):
        Registry.open(reg.root + "-missing")


def test_artifacts_live_under_their_shard(reg: Registry, model_bytes: bytes) -> None:
    staged = reg.stage_artifact("acme", model_bytes, "run-1")
    shard = reg.shard_of("acme")
    assert f"/artifacts/shard={shard:02d}/tenant=acme/v=1/model.ubj" in staged.artifact_uri
    assert Path(staged.artifact_uri).read_bytes() == model_bytes


def test_publish_is_one_commit_and_idempotent(reg: Registry, model_bytes: bytes) -> None:
    before = reg.index.table("models").version()
    publish_one(reg, "run-1", ["a1", "a2", "a3"], model_bytes)
    assert reg.index.table("models").version() == before + 1
    assert reg.is_published("run-1")
    res = reg.publish("run-1", [], [])
    assert res.already_published and res.published == 0
    assert reg.index.table("models").version() == before + 1
    assert [m.version for m in reg.history("a1")] == [1]


def test_retry_reuses_the_claim_of_the_same_run(reg: Registry, model_bytes: bytes) -> None:
    first = reg.stage_artifact("acme", model_bytes, "run-1")
    again = reg.stage_artifact("acme", model_bytes, "run-1")
    other = reg.stage_artifact("acme", model_bytes, "run-2")
    assert first.version == again.version == 1
    assert other.version == 2


def test_aliases_promote_rollback_history(reg: Registry, model_bytes: bytes) -> None:
    for i in range(1, 4):
        publish_one(reg, f"run-{i}", ["acme"], train_tiny(seed=i))
    assert [m.version for m in reg.history("acme")] == [3, 2, 1]
    assert reg.get("acme").production.version == 3
    assert reg.rollback("acme").version == 2
    assert reg.rollback("acme").version == 1
    with pytest.raises(Conflict, match="no previous production"):
        reg.rollback("acme")
    reg.promote("acme", 3, alias="shadow")
    tm = reg.get("acme")
    assert (tm.production.version, tm.shadow.version) == (1, 3)
    reg.clear_alias("acme", "shadow")
    assert reg.get("acme").shadow is None
    with pytest.raises(UnknownTenant):
        reg.get("nobody")
    with pytest.raises(InvalidTenantId):
        reg.get("../acme")


def test_flipped_byte_fails_checksum_only_for_that_tenant(reg: Registry,
                                                          model_bytes: bytes) -> None:
    publish_one(reg, "run-1", ["good", "bad"], model_bytes)
    bad = reg.get("bad").production
    raw = bytearray(Path(bad.artifact_uri).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    Path(bad.artifact_uri).write_bytes(bytes(raw))
    with pytest.raises(ChecksumMismatch, match="sha256"):
        reg.load_booster(bad)
    booster = reg.load_booster(reg.get("good").production)
    x = np.random.default_rng(1).random((3, 3))
    assert booster.inplace_predict(x).shape == (3,)


def test_index_is_plain_delta_readable_by_pandas(reg: Registry, model_bytes: bytes) -> None:
    publish_one(reg, "run-1", ["a1", "a2"], model_bytes)
    df = DeltaTable(os.path.join(reg.root, "index", "models")).to_pandas()
    assert sorted(df["tenant_id"]) == ["a1", "a2"]
    assert set(df["auc"]) == {0.8}
    assert list(df["feature_names"].iloc[0]) == list(FEATURES)
    assert json.loads(df["metrics_json"].iloc[0])["n_train"] == 100


def test_snapshot_refresh_sees_new_publish(reg: Registry, model_bytes: bytes) -> None:
    snap = reg.new_snapshot()
    assert snap.tenants() == []
    publish_one(reg, "run-1", ["acme"], model_bytes)
    assert snap.refresh() is True
    assert snap.resolve("acme").version == 1
    assert snap.refresh() is False
    assert snap.lag_seconds() < 60


def test_gc_keeps_aliased_and_removes_orphans(reg: Registry, model_bytes: bytes) -> None:
    for i in range(1, 5):
        publish_one(reg, f"run-{i}", ["acme"], model_bytes)
    reg.promote("acme", 1, alias="shadow")
    orphan = reg.stage_artifact("acme", model_bytes, "crashed-run")
    report = collect_garbage(reg, keep=1, orphan_grace_s=0)
    assert report.orphans_removed == 1 and report.versions_removed == 1  # v2 only
    assert not Path(orphan.artifact_uri).exists()
    for v in (1, 3, 4):  # shadow, previous production, newest/production
        reg.load_booster(reg.snapshot().version("acme", v))
    # rows stay as metrics history; a fresh snapshot still reads the compacted index
    assert [m.version for m in Registry.open(reg.root).history("acme")] == [4, 3, 2, 1]
    assert reg.new_snapshot().alias_version("acme") == 4


def test_booster_round_trip_predicts_same(reg: Registry, model_bytes: bytes) -> None:
    publish_one(reg, "run-1", ["acme"], model_bytes)
    original = xgb.Booster()
    original.load_model(bytearray(model_bytes))
    x = np.random.default_rng(3).random((5, 3))
    loaded = reg.load_booster(reg.get("acme").production)
    np.testing.assert_allclose(loaded.inplace_predict(x), original.inplace_predict(x))
    assert reg.publish_state("nope") is PublishState.NONE
