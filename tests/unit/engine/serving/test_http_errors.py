"""Every answer is declared and shaped as documented: FastAPI's own 404/405/422 in the
project's error bodies, ``Allow`` on 405, the OpenAPI document's responses, patterns and
examples, undeclared methods on the health routes (model host, ingress control app and
the HAProxy /healthz rule)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.ingress.config import IngressConfig, render_config
from engine.ingress.control import ControlSources, create_control_app
from engine.ingress.runtime import StatRow
from engine.serving.api import create_app
from engine.serving.auth import KeyStore
from engine.serving.host import ModelHostState
from engine.serving.v2 import install_v2
from engine.serving.v2_schema import EXAMPLE_ROW
from engine.settings import ServeSettings
from registry import Registry
from registry.ids import TENANT_ID_PATTERN

from .test_api import call
from .test_host import publish, tiny

UNDECLARED = ("TRACE", "PUT", "DELETE", "POST", "PATCH")


@pytest.fixture()
def host(tmp_path: Path) -> Iterator[Any]:
    """The model host's app as engine.serving.app composes it (v1, v2, shadow routes)."""
    from engine.shadow import install

    reg = Registry.create(str(tmp_path / "reg"), 2)
    publish(reg, "r1", {"acme": tiny(1)})
    settings = ServeSettings(registry=reg.root, shadow_worker="thread")
    state = ModelHostState(settings, reg)
    yield create_app(state, KeyStore(), [install_v2, install(state, settings)])
    state.close()


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_undeclared_methods_on_health_routes_answer_405(host: Any, path: str) -> None:
    for method in UNDECLARED:
        resp = call(host, method, path)
        assert resp.status_code == 405, (method, path)
        assert resp.headers["allow"] == "GET, HEAD"
        assert resp.json()["error"] == "MethodNotAllowed" and path in resp.json()["detail"]
    assert call(host, "GET", path).status_code == 200
    assert call(host, "HEAD", path).status_code == 200


def test_allow_lists_every_route_of_a_path(host: Any) -> None:
    resp = call(host, "OPTIONS", "/v1/admin/tenants/acme/shadow")
    assert resp.status_code == 405 and resp.headers["allow"] == "DELETE, PUT"
    assert call(host, "GET", "/v1/tenants/acme/predict").headers["allow"] == "POST"


def test_fastapi_refusals_use_the_project_shapes(host: Any) -> None:
    missing = call(host, "GET", "/nowhere")
    assert missing.status_code == 404
    assert missing.json() == {"error": "NotFound", "detail": "GET /nowhere: Not Found"}
    v2_missing = call(host, "GET", "/v2/nowhere")
    assert v2_missing.status_code == 404 and set(v2_missing.json()) == {"error"}
    bad = call(host, "GET", "/v1/tenants/-bad/model")
    assert bad.status_code == 422 and bad.json()["error"] == "InvalidTenantId"
    assert "starting with a letter or digit" in bad.json()["detail"]
    v2_bad = call(host, "GET", "/v2/models/-bad/ready")
    assert v2_bad.status_code == 400 and set(v2_bad.json()) == {"error"}
    v2_post = call(host, "GET", "/v2/models/acme/infer")
    assert v2_post.status_code == 405 and set(v2_post.json()) == {"error"}


def test_openapi_declares_every_answer(host: Any) -> None:
    doc = call(host, "GET", "/openapi.json").json()
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    predict = paths["/v1/tenants/{tenant_id}/predict"]["post"]
    assert {"200", "401", "403", "404", "413", "415", "422", "503"} <= set(predict["responses"])
    assert predict["responses"]["422"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/ErrorBody"}
    assert set(schemas["ErrorBody"]["required"]) == {"error", "detail"}
    param = predict["parameters"][0]
    assert param["name"] == "tenant_id" and param["schema"]["pattern"] == \
        TENANT_ID_PATTERN.pattern == "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
    body = predict["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["instances"]["maxItems"] == 1000
    assert body["properties"]["instances"]["examples"][0] == [EXAMPLE_ROW]
    assert len(EXAMPLE_ROW) == 20 and "20 features" in body["description"]
    metrics = paths["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    infer = paths["/v2/models/{tenant}/infer"]["post"]
    assert {"200", "400", "401", "403", "404", "413", "415", "503"} <= set(infer["responses"])
    assert infer["responses"]["400"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/V2Error"}
    assert schemas["V2Error"]["required"] == ["error"]
    assert "$defs" not in json.dumps(infer["requestBody"])
    for path, item in paths.items():
        for method, op in item.items():
            for param in op.get("parameters", []):
                if param["name"] in ("tenant_id", "tenant"):
                    assert param["schema"]["pattern"] == TENANT_ID_PATTERN.pattern, path
            assert "HTTPValidationError" not in json.dumps(op["responses"]), (method, path)


@pytest.mark.parametrize("body", [
    {"parameters": [None]},
    {"outputs": [{"name": "probability", "parameters": [1]}]},
    {"inputs": [{"name": "input__0", "datatype": "FP32", "shape": [1, 3],
                 "data": [1, 2, 3], "parameters": []}]},
])
def test_v2_parameters_must_be_objects(host: Any, body: dict[str, Any]) -> None:
    doc = {"inputs": [{"name": "input__0", "datatype": "FP32", "shape": [1, 3],
                       "data": [1, 2, 3]}], **body}
    resp = call(host, "POST", "/v2/models/acme/infer", json=doc)
    assert resp.status_code == 400 and "parameters" in resp.json()["error"]


def test_control_app_refuses_undeclared_methods() -> None:
    def stats() -> list[StatRow]:
        return []

    async def endpoints() -> list[Any]:
        return []

    async def others() -> list[str]:
        return []

    app = create_control_app(ControlSources(stats, endpoints, others))

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ctl") as client:
            for path in ("/readyz", "/metrics"):
                for method in UNDECLARED:
                    resp = await client.request(method, path)
                    assert resp.status_code == 405, (method, path)
                    assert resp.headers["allow"] == "GET, HEAD"
                    assert resp.json()["error"] == "MethodNotAllowed"
                assert (await client.head(path)).status_code != 405  # HEAD is GET

    asyncio.run(main())


def test_ingress_healthz_rule_answers_405_to_other_methods() -> None:
    text = render_config(IngressConfig("127.0.0.1", 8080, "/tmp/x.sock", 9000))
    rules = [line.strip() for line in text.splitlines() if "path /healthz" in line]
    assert len(rules) == 2
    assert rules[0].startswith("http-request return status 405")
    assert 'hdr allow "GET, HEAD"' in rules[0] and "!{ method GET HEAD }" in rules[0]
    assert '"error": "MethodNotAllowed"' in rules[0]
    assert rules[1].startswith("http-request return status 200")
