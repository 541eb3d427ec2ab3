"""The model host's ASGI app without Ray or sockets: fast path, FastAPI routes, API keys."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from engine.serving.api import create_app
from engine.serving.auth import KeyStore, add_key
from engine.serving.host import ModelHostState
from engine.settings import ServeSettings
from registry import Registry

from .test_host import NAMES, publish, tiny


@pytest.fixture()
def reg(tmp_path: Path) -> Registry:
    reg = Registry.create(str(tmp_path / "reg"), 2)
    publish(reg, "r1", {"acme": tiny(1), "globex": tiny(2)})
    return reg


def call(app: object, method: str, path: str, **kw: object) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # ASGI callable
        async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
            return await client.request(method, path, **kw)  # type: ignore[arg-type]

    return asyncio.run(go())


def test_fast_path_and_fastapi_routes_agree(reg: Registry) -> None:
    state = ModelHostState(ServeSettings(registry=reg.root), reg)
    app = create_app(state)
    resp = call(app, "POST", "/v1/tenants/acme/predict", json={"instances": [[1, 2, 3]]})
    assert resp.status_code == 200 and resp.headers["x-model-version"] == "1"
    assert resp.json()["tenant_id"] == "acme" and len(resp.json()["predictions"]) == 1
    bad = call(app, "POST", "/v1/tenants/acme/predict", json={"instances": [[1, 2]]})
    assert bad.status_code == 422 and bad.json()["error"] == "ValidationError"
    assert call(app, "POST", "/v1/tenants/none/predict",
                json={"instances": [[1, 2, 3]]}).status_code == 404
    model = call(app, "GET", "/v1/tenants/acme/model").json()
    assert model["production"]["feature_names"] == list(NAMES)
    assert "/v1/tenants/{tenant_id}/predict" in call(app, "GET", "/openapi.json").json()["paths"]
    metrics = call(app, "GET", "/metrics").text
    assert 'tenantry_requests_total{code="200",route="predict"} 1.0' in metrics
    assert 'tenantry_requests_total{code="422",route="predict"} 1.0' in metrics


def test_api_keys_scope_each_key_to_its_tenant(reg: Registry, tmp_path: Path) -> None:
    path = str(tmp_path / "keys.json")
    acme_key = add_key(path, "acme")
    state = ModelHostState(ServeSettings(registry=reg.root), reg)
    app = create_app(state, KeyStore.load(path))
    body = {"instances": [[1, 2, 3]]}
    assert call(app, "POST", "/v1/tenants/acme/predict", json=body).status_code == 401
    ok = call(app, "POST", "/v1/tenants/acme/predict", json=body,
              headers={"authorization": f"Bearer {acme_key}"})
    assert ok.status_code == 200
    other = call(app, "POST", "/v1/tenants/globex/predict", json=body,
                 headers={"authorization": f"Bearer {acme_key}"})
    assert other.status_code == 403 and "globex" in other.json()["detail"]
    assert call(app, "GET", "/v1/tenants/globex/model",
                headers={"x-api-key": acme_key}).status_code == 403
    assert call(app, "GET", "/healthz").status_code == 200
