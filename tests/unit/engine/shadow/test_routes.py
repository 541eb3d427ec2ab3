"""Shadow HTTP routes on a host app (no Ray): admin guard, validation, config round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from engine.serving.api import create_app
from engine.serving.auth import KeyStore, add_key
from engine.shadow import ConfigStore, ShadowTables, install


def _client(world: Any, keys: KeyStore) -> tuple[TestClient, Any]:
    state = world.host()
    hook = install(state, state.settings)
    return TestClient(create_app(state, keys, [hook])), state


def test_put_get_delete_round_trip(fresh: Any, h: Any) -> None:
    client, state = _client(fresh, KeyStore())
    try:
        resp = client.put(f"/v1/admin/tenants/{h.TENANT}/shadow",
                          json={"fraction": 0.25, "until": "2099-01-01T00:00:00Z"})
        assert resp.status_code == 200, resp.text
        doc = resp.json()
        assert doc["config"]["fraction"] == 0.25 and doc["shadow_version"] == 2
        assert doc["production_version"] == 1 and doc["replica"]["spool"]["max_bytes"] > 0
        stored = ConfigStore(ShadowTables.for_registry(fresh.reg)).get(h.TENANT)
        assert stored is not None and stored.fraction == 0.25  # every replica reads this
        assert client.get(f"/v1/tenants/{h.TENANT}/shadow").json()["config"]["fraction"] == 0.25
        assert client.delete(f"/v1/admin/tenants/{h.TENANT}/shadow").json()["config"] is None
        assert ConfigStore(ShadowTables.for_registry(fresh.reg)).get(h.TENANT) is None
    finally:
        state.close()


def test_bad_input_is_422_or_404(fresh: Any, h: Any) -> None:
    client, state = _client(fresh, KeyStore())
    try:
        url = f"/v1/admin/tenants/{h.TENANT}/shadow"
        assert client.put(url, json={"fraction": 1.5}).status_code == 422
        assert client.put(url, json={"version": 2}).status_code == 422  # fraction required
        assert client.put(url, content=b"{nope").status_code == 422
        assert client.put(url, json={"fraction": 0.5, "start": "2030-01-02T00:00:00Z",
                                     "until": "2030-01-01T00:00:00Z"}).status_code == 422
        assert client.put(url, json={"fraction": 0.5, "version": 9}).status_code == 404
        assert client.put("/v1/admin/tenants/nobody/shadow",
                          json={"fraction": 0.5}).status_code == 404
    finally:
        state.close()


def test_admin_routes_need_an_admin_token(fresh: Any, h: Any, tmp_path: Path) -> None:
    keys_file = str(tmp_path / "keys.json")
    tenant_key = add_key(keys_file, h.TENANT)
    admin = add_key(keys_file, None)
    client, state = _client(fresh, KeyStore.load(keys_file))
    try:
        url = f"/v1/admin/tenants/{h.TENANT}/shadow"
        body = json.dumps({"fraction": 0.5})
        assert client.put(url, content=body).status_code == 401
        assert client.put(url, content=body,
                          headers={"authorization": f"Bearer {tenant_key}"}).status_code == 403
        assert client.put(url, content=body,
                          headers={"authorization": f"Bearer {admin}"}).status_code == 200
        assert client.delete(url).status_code == 401
        assert client.get(f"/v1/tenants/{h.TENANT}/shadow",
                          headers={"x-api-key": tenant_key}).status_code == 200
    finally:
        state.close()


def _worker_error(state: Any, error: str) -> None:
    """Have the replica's worker report ``error`` (as its worker.json would)."""
    (state.shadow.spool.path / "worker.json").write_text(
        json.dumps({"pid": 1, "batches": 0, "last_error": error}))


def test_a_tenant_key_sees_no_replica_text_naming_other_tenants(fresh: Any, h: Any,
                                                                 tmp_path: Path) -> None:
    keys_file = str(tmp_path / "keys.json")
    tenant_key = add_key(keys_file, h.TENANT)
    admin = add_key(keys_file, None)
    client, state = _client(fresh, KeyStore.load(keys_file))
    try:
        _worker_error(state, "globex@v3: ValueError: globex's shadow model broke")
        url = f"/v1/tenants/{h.TENANT}/shadow"
        mine = client.get(url, headers={"x-api-key": tenant_key})
        assert mine.status_code == 200 and "globex" not in mine.text
        replica = mine.json()["replica"]
        assert "last_error" not in replica and replica["spool"]["max_bytes"] > 0
        assert replica["outcomes"]["ok"] == 0 and replica["worker"]["batches"] == 0
        assert "id" not in replica["spool"]  # it names the host
        full = client.get(url, headers={"authorization": f"Bearer {admin}"}).json()
        assert full["replica"]["last_error"].startswith("globex@v3")
        assert full["replica"]["worker"]["kind"] == "thread" and "kind" not in replica["worker"]
    finally:
        state.close()


def test_without_keys_everyone_sees_the_replica_as_before(fresh: Any) -> None:
    client, state = _client(fresh, KeyStore())
    try:
        _worker_error(state, "globex@v3: boom")
        doc = client.get("/v1/tenants/acme/shadow").json()
        assert doc["replica"]["last_error"] == "globex@v3: boom"
    finally:
        state.close()
