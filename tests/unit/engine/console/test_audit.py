"""Audit trail: who, when and why of alias moves and shadow changes, from the CLI, the
admin API and the library; older tables without the columns keep working."""

from __future__ import annotations

import getpass
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from starlette.testclient import TestClient

from engine.cli import main
from engine.serving.api import create_app
from engine.serving.auth import KeyStore, add_key
from engine.serving.host import ModelHostState
from engine.settings import ServeSettings
from engine.shadow import ConfigStore, ShadowTables, install
from engine.shadow.tables import SCHEMAS
from registry import Registry
from registry.index import TABLES


def _json(capsys: Any, argv: list[str]) -> Any:
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_cli_promote_and_rollback_record_who_and_why(world: Any, capsys: Any) -> None:
    root = world.root
    _json(capsys, ["registry", "promote", "acme", "3", "--reason", "better holdout",
                   "--registry", root, "--json"])
    _json(capsys, ["registry", "rollback", "acme", "--reason", "complaints",
                   "--registry", root, "--json"])
    versions = _json(capsys, ["registry", "history", "acme", "--registry", root, "--json"])
    assert [v["version"] for v in versions] == [3, 2, 1]  # the VERSION contract is kept
    assert {"version", "artifact_uri", "sha256", "metrics", "run_id"} <= set(versions[0])
    events = _json(capsys, ["registry", "history", "acme", "--events", "--registry", root,
                            "--json"])
    newest, promoted = events[0], events[1]
    assert newest["action"] == "rollback" and newest["version"] == 2
    assert newest["actor"] == getpass.getuser() and newest["reason"] == "complaints"
    assert promoted["action"] == "set" and promoted["version"] == 3
    assert promoted["actor"] == getpass.getuser() and promoted["reason"] == "better holdout"
    assert events[-1]["actor"] is None and events[-1]["run_id"] == "run-0"  # a run's move
    assert all(e["at"] for e in events)
    assert main(["registry", "history", "acme", "--events", "--registry", root]) == 0
    text = capsys.readouterr().out
    assert f"by {getpass.getuser()}: complaints" in text and "by run run-0" in text


def test_promote_without_reason_keeps_the_old_default(world: Any) -> None:
    reg = Registry.open(world.root)
    reg.promote("globex", 2, actor="bob")
    event = reg.alias_events("globex")[0]
    assert (event.actor, event.reason, event.version) == ("bob", "promote", 2)


def test_legacy_alias_table_gains_actor_and_old_rows_read_null(tmp_path: Path,
                                                               h: Any) -> None:
    reg = h.registry(tmp_path / "legacy", nights=2)
    aliases = f"{reg.root}/index/aliases"
    shutil.rmtree(aliases)
    legacy = TABLES["aliases"]  # no actor column
    DeltaTable.create(aliases, legacy, partition_by=["shard"],
                      configuration={"delta.enableChangeDataFeed": "true"})
    write_deltalake(aliases, pa.table({
        "tenant_id": ["acme"], "shard": pa.array([reg.shard_of("acme")], pa.int32()),
        "alias": ["production"], "version": pa.array([1], pa.int64()), "action": ["set"],
        "reason": ["old"], "run_id": pa.array(["run-0"], pa.string()),
        "set_at": pa.array([datetime.now(UTC)], legacy.field("set_at").type),
        "commit_version": pa.array([1], pa.int64()),
    }, schema=legacy), mode="append")
    again = Registry.open(reg.root)
    again.promote("acme", 2, reason="new", actor="carol")
    events = Registry.open(reg.root).alias_events("acme")
    assert [(e.version, e.actor, e.reason) for e in events] == [(2, "carol", "new"),
                                                               (1, None, "old")]
    assert Registry.open(reg.root).new_snapshot().alias_version("acme") == 2


def test_cli_shadow_set_and_clear_record_who_and_why(world: Any, capsys: Any) -> None:
    root = world.root
    _json(capsys, ["shadow", "set", "initech", "--fraction", "0.2", "--reason", "try v2",
                   "--registry", root, "--json"])
    _json(capsys, ["shadow", "clear", "initech", "--reason", "enough data", "--registry",
                   root, "--json"])
    history = ConfigStore(ShadowTables.for_registry(Registry.open(root))).history("initech")
    assert [(c.cleared, c.actor, c.reason) for c in history] == [
        (True, getpass.getuser(), "enough data"), (False, getpass.getuser(), "try v2")]


def test_legacy_shadow_config_table_gains_the_audit_columns(tmp_path: Path, h: Any) -> None:
    reg = h.registry(tmp_path / "legacy-shadow", nights=2)
    tables = ShadowTables.for_registry(reg)
    tables.append("config", pa.table({  # a row written before actor/reason existed
        "tenant_id": ["acme"], "version": pa.array([1], pa.int64()), "fraction": [0.5],
        "start": pa.array([None], pa.timestamp("us", tz="UTC")),
        "until": pa.array([None], pa.timestamp("us", tz="UTC")), "cleared": [False],
        "set_at": pa.array([datetime(2026, 1, 1, tzinfo=UTC)], pa.timestamp("us", tz="UTC")),
    }, schema=SCHEMAS["config"]))
    store = ConfigStore(tables)
    store.clear("acme", actor="dave", reason="done")
    history = store.history("acme")
    assert [(c.cleared, c.actor, c.reason) for c in history] == [(True, "dave", "done"),
                                                                 (False, None, None)]
    assert store.get("acme") is None


def test_admin_api_records_admin_and_the_reason(tmp_path: Path, h: Any) -> None:
    reg = h.registry(tmp_path / "api", nights=2)
    keys_file = str(tmp_path / "keys.json")
    admin = add_key(keys_file, None)
    state = ModelHostState(ServeSettings(registry=reg.root, shadow_worker="thread",
                                         shadow_config_refresh_s=0.2),
                           Registry.open(reg.root))
    hook = install(state, state.settings)
    try:
        client = TestClient(create_app(state, KeyStore.load(keys_file), [hook]))
        auth = {"authorization": f"Bearer {admin}"}
        url = "/v1/admin/tenants/acme/shadow"
        resp = client.put(url, json={"fraction": 0.3, "version": 1, "reason": "canary"},
                          headers=auth)
        assert resp.status_code == 200, resp.text
        assert resp.json()["config"]["actor"] == "admin"
        resp = client.request("DELETE", url + "?reason=rolled%20out", headers=auth)
        assert resp.status_code == 200, resp.text
        history = ConfigStore(ShadowTables.for_registry(reg)).history("acme")
        assert [(c.actor, c.reason) for c in history] == [("admin", "rolled out"),
                                                          ("admin", "canary")]
    finally:
        state.close()
