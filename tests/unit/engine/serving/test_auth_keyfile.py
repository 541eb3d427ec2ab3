"""The API key file: atomic owner-only writes, no lost keys under concurrent writers, and
revocation that a running KeyStore sees within seconds."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.errors import Unauthorized
from engine.serving import auth
from engine.serving.auth import KeyStore, add_key, hash_key, revoke_key
from registry.errors import NotFound
from tests.conftest import wait_for

WRITER = """
import sys, time
from engine.serving.auth import add_key
path, name, n, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
while time.time() < start_at:
    time.sleep(0.001)
for i in range(n):
    print(add_key(path, f"{name}-{i}"))
"""


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _accepted(store: KeyStore, key: str, tenant: str) -> bool:
    try:
        store.check_tenant(_bearer(key), tenant)
    except Unauthorized:
        return False
    return True


def test_concurrent_writers_keep_every_key(tmp_path: Path) -> None:
    path = str(tmp_path / "keys.json")
    start_at = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, path, f"w{w}", "25", str(start_at)],
                              stdout=subprocess.PIPE, text=True) for w in range(3)]
    keys = [p.communicate(timeout=120)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    stored = json.loads(Path(path).read_text())["tenants"]
    assert len(stored) == 75
    for w, mine in enumerate(keys):
        assert [stored[hash_key(k)] for k in mine] == [f"w{w}-{i}" for i in range(25)]


def test_the_file_is_replaced_atomically_and_owner_only(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys.json"
    add_key(str(path), "acme")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        replaced.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(auth.os, "replace", spy)
    add_key(str(path), None)
    assert len(replaced) == 1 and replaced[0][1] == str(path)
    assert Path(replaced[0][0]).parent == tmp_path  # same directory: rename is atomic
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json", "keys.json.lock"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_revoked_key_stops_working_in_a_live_keystore(tmp_path: Path) -> None:
    path = str(tmp_path / "keys.json")
    acme, globex = add_key(path, "acme"), add_key(path, "globex")
    live = KeyStore.load(path)
    live.check_tenant(_bearer(acme), "acme")
    assert revoke_key(path, "acme") == 1
    wait_for(lambda: not _accepted(live, acme, "acme"), timeout=5.0,
             what=lambda: "(the revoked key is still accepted)")
    live.check_tenant(_bearer(globex), "globex")
    fresh = add_key(path, "acme")  # a new key is picked up the same way
    wait_for(lambda: _accepted(live, fresh, "acme"), timeout=5.0,
             what=lambda: "(the new key is not accepted)")


def test_the_hot_path_looks_at_the_file_at_most_once_per_interval(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "keys.json")
    key = add_key(path, "acme")
    now = [100.0]
    store = KeyStore.load(path)
    store = KeyStore(store.tenants, store.admin, True, path=path, clock=lambda: now[0])
    stats: list[str] = []
    real_stat = os.stat

    def counting_stat(p: str) -> os.stat_result:
        stats.append(p)
        return real_stat(p)

    monkeypatch.setattr(auth.os, "stat", counting_stat)
    for _ in range(1000):
        store.check_tenant(_bearer(key), "acme")
    assert stats == []
    now[0] += 1.0
    for _ in range(1000):
        store.check_tenant(_bearer(key), "acme")
    assert stats == [path]


def test_revoking_admin_tokens_and_unknown_tenants(tmp_path: Path) -> None:
    path = str(tmp_path / "keys.json")
    token = add_key(path, None)
    add_key(path, "acme")
    with pytest.raises(NotFound, match="no API key for tenant 'globex'"):
        revoke_key(path, "globex")
    assert revoke_key(path, None) == 1
    doc = json.loads(Path(path).read_text())
    assert doc["admin"] == [] and list(doc["tenants"].values()) == ["acme"]
    assert hash_key(token) not in Path(path).read_text()


def test_apikey_revoke_cli(tmp_path: Path, capsys: Any) -> None:
    path = str(tmp_path / "keys.json")
    assert main(["apikey", "acme", "--file", path, "--json"]) == 0
    key = json.loads(capsys.readouterr().out)["key"]
    assert main(["apikey", "--admin", "--file", path]) == 0
    capsys.readouterr()
    assert main(["apikey", "--revoke", "acme", "--file", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["revoked"] == 1
    assert hash_key(key) not in Path(path).read_text()
    assert main(["apikey", "--revoke-admin", "--file", path]) == 0
    assert "revoked 1 admin tokens" in capsys.readouterr().out
    for argv in (["apikey", "--revoke", "acme"], ["apikey", "--revoke"],
                 ["apikey", "acme", "--revoke-admin"]):
        assert main([*argv, "--file", path]) == 2
        err = capsys.readouterr().err
        assert err.startswith("tenantry: error:") and err.count("\n") == 1
