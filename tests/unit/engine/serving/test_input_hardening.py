"""Hostile predict input through the host's ASGI app (no Ray): request ids, JSON depth and
number size, float32 range, Content-Type; and metric pages carrying +Inf, -Inf and NaN."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.metrics import Metrics
from engine.serving.aggregate import merge_metrics
from engine.serving.api import create_app
from engine.serving.host import ModelHostState
from engine.serving.validation import request_id
from engine.settings import ServeSettings
from registry import ModelVersion, Registry

from .test_host import publish, tiny

URL = "/v1/tenants/acme/predict"


class RecordingShadow:
    """A ShadowHook that keeps the request ids the host hands it."""

    def __init__(self) -> None:
        self.request_ids: list[str] = []

    def after_predict(self, tenant_id: str, production: ModelVersion, x: np.ndarray,
                      predictions: np.ndarray, request_id: str, synthetic: bool,
                      latency_s: float) -> None:
        self.request_ids.append(request_id)

    def pinned_versions(self, tenant_id: str) -> Iterable[int]:
        return []

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture()
def state(tmp_path: Path) -> ModelHostState:
    reg = Registry.create(str(tmp_path / "reg"), 2)
    publish(reg, "r1", {"acme": tiny(1)})
    state = ModelHostState(ServeSettings(registry=reg.root), reg)
    state.shadow = RecordingShadow()
    return state


def post(state: ModelHostState, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(state))  # type: ignore[arg-type]  # ASGI callable
        async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
            return await client.post(URL, **kw)

    return asyncio.run(go())


# -- x-request-id ----------------------------------------------------------------------------
def test_request_id_rule() -> None:
    assert request_id("req-42 a") == "req-42 a"
    assert request_id("x" * 128) == "x" * 128
    for bad in (None, "", "x" * 129, "caf\xe9", "a\tb", "a\x7fb"):
        fresh = request_id(bad)
        assert len(fresh) == 32 and int(fresh, 16) >= 0 and fresh != bad


def test_oversized_or_unprintable_request_ids_never_reach_the_shadow(
        state: ModelHostState) -> None:
    rows = {"instances": [[1, 2, 3]]}
    for rid in ("x" * 60_000, "x" * 129, b"caf\xc3\xa9", "ok-id-1"):
        assert post(state, json=rows, headers={"x-request-id": rid}).status_code == 200
    assert isinstance(state.shadow, RecordingShadow)
    seen = state.shadow.request_ids
    assert len(seen) == 4 and seen[3] == "ok-id-1"
    assert all(len(r) == 32 and int(r, 16) >= 0 for r in seen[:3])
    assert len(set(seen[:3])) == 3  # a fresh id each time


# -- the body ---------------------------------------------------------------------------------
@pytest.mark.parametrize("content, message", [
    (b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    (b'{"instances": [[1, ' + b"9" * 5000 + b", 3]]}", "more than 4300 digits"),
    (b'{"instances": [[1, ' + b"9" * 400 + b", 3]]}", "row 0, feature age: integer beyond"),
    (b'{"instances": [[1, 2, 3], [1, 1e39, 3]]}', "row 1, feature age: 1e+39 is beyond"),
    (b'{"instances": [[1, 2, -1e39]]}', "row 0, feature velocity: -1e+39 is beyond"),
    (b'{"instances": [{"amount": 1}, {"velocity": 1e39}]}', "row 1, feature velocity: 1e+39"),
    (b'{"instances": [[1, 1e400, 3]]}', "row 0, feature age: infinite values"),
    (b'{"instances": [[NaN, 2, 3]]}', "NaN is not valid JSON"),
    (b'{"instances": [[1, -Infinity, 3]]}', "-Infinity is not valid JSON"),
], ids=["deep", "4300-digits", "400-digits", "1e39", "-1e39", "1e39-named", "1e400", "NaN",
        "-Infinity"])
def test_hostile_bodies_are_422_with_a_message(state: ModelHostState, content: bytes,
                                               message: str) -> None:
    resp = post(state, content=content)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"] == "ValidationError" and message in resp.json()["detail"]


def test_float32_extremes_are_accepted(state: ModelHostState) -> None:
    big = float(np.finfo(np.float32).max)
    resp = post(state, json={"instances": [[big, -big, None], [1e-45, 0, 1]]})
    assert resp.status_code == 200, resp.text


# -- Content-Type ----------------------------------------------------------------------------
@pytest.mark.parametrize("ctype", ["application/x-www-form-urlencoded", "text/plain",
                                   "application/jsonp", "application/xml", "json"])
def test_non_json_content_type_is_415(state: ModelHostState, ctype: str) -> None:
    resp = post(state, content=b'{"instances": [[1, 2, 3]]}', headers={"content-type": ctype})
    assert resp.status_code == 415, resp.text
    doc = resp.json()
    assert doc["error"] == "UnsupportedMediaType" and "application/json" in doc["detail"]


@pytest.mark.parametrize("ctype", [None, "application/json", "Application/JSON; charset=utf-8",
                                   "application/vnd.tenantry+json"])
def test_json_or_missing_content_type_is_read(state: ModelHostState, ctype: str | None) -> None:
    headers = {"content-type": ctype} if ctype else {}
    resp = post(state, content=b'{"instances": [[1, 2, 3]]}', headers=headers)
    assert resp.status_code == 200, resp.text


# -- merged metrics ---------------------------------------------------------------------------
def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_merge_formats_inf_and_nan_and_reparses() -> None:
    a, b = Metrics(), Metrics()
    a.cache_bytes.set(float("inf"))
    b.cache_bytes.set(5)
    a.cache_models.set(float("-inf"))
    b.cache_models.set(float("-inf"))
    a.registry_lag_seconds.set(float("nan"))
    b.registry_lag_seconds.set(2.0)
    pages = [a.render().decode(), b.render().decode()]
    page = ('# HELP tenantry_odd odd samples\n# TYPE tenantry_odd gauge\n'
            'tenantry_odd{k="sum"} +Inf\ntenantry_odd{k="nan"} NaN\n')
    other = page.replace('{k="sum"} +Inf', '{k="sum"} -Inf').replace("NaN", "1")
    for order in (pages + [page, other], list(reversed(pages)) + [other, page]):
        text = merge_metrics(order)
        assert "tenantry_cache_bytes +Inf" in text and "tenantry_cache_models -Inf" in text
        merged = _samples(text)  # the output is valid exposition text
        assert merged[("tenantry_cache_bytes", ())] == float("inf")
        assert merged[("tenantry_cache_models", ())] == float("-inf")
        assert merged[("tenantry_registry_lag_seconds", ())] == 2.0  # a max skips NaN
        assert np.isnan(merged[("tenantry_odd", (("k", "sum"),))])  # +Inf + -Inf
        assert np.isnan(merged[("tenantry_odd", (("k", "nan"),))])  # NaN + 1
        assert 'tenantry_odd{k="nan"} NaN' in text


def test_an_encoded_slash_is_an_invalid_tenant_and_a_huge_body_is_413(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from engine.serving.api import create_app
    from engine.serving.host import ModelHostState
    from engine.settings import ServeSettings
    from registry import Registry

    root = str(tmp_path / "reg")
    Registry.create(root, num_shards=2)
    state = ModelHostState(ServeSettings(registry=root), Registry.open(root))
    client = TestClient(create_app(state))
    resp = client.post("/v1/tenants/bad%2F..id/predict", json={"instances": [[0.0]]})
    assert resp.status_code == 422 and "invalid tenant id" in resp.json()["detail"]
    # The ingress refuses this first; a client reaching a host directly meets the same cap.
    resp = client.post("/v1/tenants/ok/predict", content=b"[" * 10 + b"0" * 2_000_000,
                       headers={"content-type": "application/json"})
    assert resp.status_code == 413 and resp.json()["error"] == "PayloadTooLarge"
    state.close()
