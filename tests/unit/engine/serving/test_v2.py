"""The Open Inference Protocol (KServe V2) routes over ASGI, without Ray or sockets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import xgboost as xgb

from engine.loadtest.workload import WireProtocol, request_body
from engine.serving.api import create_app, route_label
from engine.serving.auth import KeyStore, add_key
from engine.serving.host import ModelHostState
from engine.serving.v2 import install_v2, v2_route_label
from engine.settings import ServeSettings
from registry import ModelVersion, Registry

from .test_host import NAMES, publish, tiny

ROWS: list[list[float | None]] = [[0.5, 1.0, -2.0], [None, 3.0, 0.25], [-1.5, None, 4.0]]


@pytest.fixture()
def reg(tmp_path: Path) -> Registry:
    """acme at v1 and v2 (production v2), globex at v1."""
    reg = Registry.create(str(tmp_path / "reg"), 2)
    publish(reg, "r1", {"acme": tiny(1), "globex": tiny(2)})
    publish(reg, "r2", {"acme": tiny(3)})
    return reg


@pytest.fixture()
def state(reg: Registry) -> ModelHostState:
    return ModelHostState(ServeSettings(registry=reg.root, max_rows=50), reg)


def call(app: object, method: str, path: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # ASGI callable
        async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
            return await client.request(method, path, **kw)

    return asyncio.run(go())


def matrix_input(rows: list[list[Any]], datatype: str = "FP32") -> dict[str, Any]:
    return {"name": "input__0", "datatype": datatype, "shape": [len(rows), len(rows[0])],
            "data": [v for row in rows for v in row]}


def infer(app: object, tenant: str, inputs: list[dict[str, Any]], path_tail: str = "",
          **extra: Any) -> httpx.Response:
    return call(app, "POST", f"/v2/models/{tenant}{path_tail}/infer",
                json={"inputs": inputs, **extra})


def v1(app: object, tenant: str, rows: list[Any]) -> list[float]:
    resp = call(app, "POST", f"/v1/tenants/{tenant}/predict", json={"instances": rows})
    assert resp.status_code == 200, resp.text
    return list(resp.json()["predictions"])


def probabilities(resp: httpx.Response) -> list[float]:
    assert resp.status_code == 200, resp.text
    out = resp.json()["outputs"]
    assert len(out) == 1 and out[0]["name"] == "probability" and out[0]["datatype"] == "FP32"
    assert out[0]["shape"] == [len(out[0]["data"])]
    return list(out[0]["data"])


def test_server_metadata_health_and_readiness(state: ModelHostState) -> None:
    app = create_app(state, extra_routes=[install_v2])
    meta = call(app, "GET", "/v2").json()
    assert meta["name"] == "tenantry" and meta["extensions"] == [] and meta["version"]
    assert call(app, "GET", "/v2/health/live").json() == {"live": True}
    assert call(app, "GET", "/v2/health/ready").json() == {"ready": True}
    state.snapshot.last_refresh_at = 0.0  # the /readyz rule: no snapshot, not ready
    not_ready = call(app, "GET", "/v2/health/ready")
    assert not_ready.status_code == 503 and not_ready.json() == {"ready": False}
    assert call(app, "GET", "/readyz").status_code == 503


def test_model_metadata_and_ready(state: ModelHostState) -> None:
    app = create_app(state, extra_routes=[install_v2])
    meta = call(app, "GET", "/v2/models/acme").json()
    assert meta["name"] == "acme" and meta["platform"] == "xgboost"
    assert meta["versions"] == ["2", "1"]
    (inp,) = meta["inputs"]
    assert inp["name"] == "input__0" and inp["datatype"] == "FP32"
    assert inp["shape"] == [-1, 3] and inp["parameters"]["feature_names"] == list(NAMES)
    assert meta["outputs"] == [{"name": "probability", "datatype": "FP32", "shape": [-1]}]
    assert call(app, "GET", "/v2/models/acme/versions/1").json()["versions"] == ["2", "1"]
    ready = call(app, "GET", "/v2/models/acme/versions/1/ready")
    assert ready.status_code == 200 and ready.json() == {"name": "acme", "ready": True}
    assert call(app, "GET", "/v2/models/acme/ready").status_code == 200
    for path in ("/v2/models/nobody", "/v2/models/acme/versions/7", "/v2/models/acme/versions/x",
                 "/v2/models/nobody/ready", "/v2/models/acme/versions/7/ready"):
        resp = call(app, "GET", path)
        assert resp.status_code == 404 and set(resp.json()) == {"error"}, path
    assert call(app, "GET", "/v2/models/Bad%20Id").status_code == 400


def test_infer_layouts_and_datatypes_match_v1(state: ModelHostState) -> None:
    app = create_app(state, extra_routes=[install_v2])
    expected = v1(app, "acme", ROWS)
    nested = {"name": "x", "datatype": "FP64", "shape": [3, 3], "data": ROWS}
    per_feature = [{"name": n, "datatype": "FP32", "shape": [3], "data": [r[i] for r in ROWS]}
                   for i, n in enumerate(NAMES)]
    for inputs in ([matrix_input(ROWS)], [nested], per_feature):
        assert probabilities(infer(app, "acme", inputs)) == pytest.approx(expected, abs=1e-6)
    ints = [[1, 2, 3], [-4, 0, 7]]
    for datatype in ("INT8", "INT16", "INT32", "INT64"):
        got = probabilities(infer(app, "acme", [matrix_input(ints, datatype)]))
        assert got == pytest.approx(v1(app, "acme", ints), abs=1e-6)
    for datatype in ("UINT8", "UINT16", "UINT32", "UINT64"):
        got = probabilities(infer(app, "acme", [matrix_input([[1, 2, 3]], datatype)]))
        assert got == pytest.approx(v1(app, "acme", [[1, 2, 3]]), abs=1e-6)
    # a feature without a tensor is missing, like an absent key on /v1
    partial = infer(app, "acme", per_feature[:2])
    assert probabilities(partial) == pytest.approx(
        v1(app, "acme", [{"amount": r[0], "age": r[1]} for r in ROWS]), abs=1e-6)


def test_infer_echoes_id_ignores_unknown_parameters_and_names_the_version(
        state: ModelHostState) -> None:
    app = create_app(state, extra_routes=[install_v2])
    resp = infer(app, "acme", [{**matrix_input(ROWS), "parameters": {"whatever": 1}}],
                 id="req-7", parameters={"binary_data_output": True, "priority": 3},
                 outputs=[{"name": "probability", "parameters": {"binary_data": False}}])
    doc = resp.json()
    assert doc["id"] == "req-7" and doc["model_name"] == "acme" and doc["model_version"] == "2"
    assert resp.headers["x-model-version"] == "2"
    assert "id" not in infer(app, "acme", [matrix_input(ROWS)]).json()


def test_loadtest_v2_bodies_score_like_v1_bodies(state: ModelHostState) -> None:
    app = create_app(state, extra_routes=[install_v2])
    v2 = call(app, "POST", "/v2/models/acme/infer", content=request_body(ROWS, WireProtocol.V2),
              headers={"content-type": "application/json"})
    assert probabilities(v2) == pytest.approx(v1(app, "acme", ROWS), abs=1e-6)


def test_a_nan_literal_is_a_missing_value_as_tritonclient_sends_it(
        state: ModelHostState) -> None:
    app = create_app(state, extra_routes=[install_v2])
    rows = [[None, 1.0, 2.0]]
    body = (b'{"inputs": [{"name": "input__0", "datatype": "FP32", "shape": [1, 3], '
            b'"data": [NaN, 1, 2]}]}')
    resp = call(app, "POST", "/v2/models/acme/infer", content=body,
                headers={"content-type": "application/json"})
    assert resp.status_code == 200, resp.text
    assert probabilities(resp) == pytest.approx(v1(app, "acme", rows), abs=1e-6)


def test_pinned_version_uses_the_same_cache_and_matches_the_artifact(
        state: ModelHostState, reg: Registry) -> None:
    app = create_app(state, extra_routes=[install_v2])
    pinned = infer(app, "acme", [matrix_input(ROWS)], "/versions/1")
    assert pinned.json()["model_version"] == "1"
    booster = xgb.Booster()
    booster.load_model(bytearray(reg.read_artifact(reg.history("acme")[-1])))
    x = np.array([[np.nan if v is None else v for v in r] for r in ROWS], dtype=np.float32)
    offline = booster.predict(xgb.DMatrix(x, feature_names=list(NAMES)))
    assert probabilities(pinned) == pytest.approx(offline.tolist(), abs=1e-6)
    production = probabilities(infer(app, "acme", [matrix_input(ROWS)], "/versions/2"))
    assert production == pytest.approx(v1(app, "acme", ROWS), abs=1e-6)
    assert production != probabilities(pinned)
    assert len(state.cache) == 2  # acme v1 and v2, one cache
    for tail in ("/versions/3", "/versions/0", "/versions/latest"):
        resp = infer(app, "acme", [matrix_input(ROWS)], tail)
        assert resp.status_code == 404 and "error" in resp.json()


BAD_INPUTS: list[tuple[str, Any]] = [
    ("expects [-1, 3]", [matrix_input([[1.0, 2.0]])]),
    ("datatype 'BYTES'", [{**matrix_input(ROWS), "datatype": "BYTES"}]),
    ("datatype 'FP16'", [{**matrix_input(ROWS), "datatype": "FP16"}]),
    ("got bool", [matrix_input([[True, 1.0, 2.0]])]),
    ("got str", [matrix_input([["1", 1.0, 2.0]])]),
    ("holds integers", [matrix_input([[1.5, 1, 2]], "INT32")]),
    ("holds integers", [matrix_input([[None, 1, 2]], "INT32")]),
    ("INT8 range", [matrix_input([[1, 200, 2]], "INT8")]),
    ("UINT8 range", [matrix_input([[1, -1, 2]], "UINT8")]),
    ("finite", [matrix_input([[1e39, 1.0, 2.0]])]),
    ("needs 6 values", [{**matrix_input(ROWS[:2]), "data": [1.0, 2.0]}]),
    ("does not match its shape", [{**matrix_input(ROWS[:2]), "data": [[1.0, 2.0, 3.0]]}]),
    ("unknown feature name", [{"name": "colour", "datatype": "FP32", "shape": [1],
                               "data": [1.0]}]),
    ("same shape", [{"name": "amount", "datatype": "FP32", "shape": [1], "data": [1.0]},
                    {"name": "age", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}]),
    ("appears twice", [{"name": "amount", "datatype": "FP32", "shape": [1], "data": [1.0]}] * 2),
    ("shape [n, n_features]", [matrix_input(ROWS), matrix_input(ROWS)]),
    ("no rows", [{"name": "input__0", "datatype": "FP32", "shape": [0, 3], "data": []}]),
    ("too many rows", [{"name": "input__0", "datatype": "FP32", "shape": [51, 3],
                        "data": [0.0] * 153}]),
    ("binary tensor extension", [{**matrix_input(ROWS), "parameters": {"binary_data_size": 36}}]),
    ('has no "data"', [{"name": "input__0", "datatype": "FP32", "shape": [1, 3]}]),
    ("non-negative integers", [{**matrix_input(ROWS), "shape": [3, -3]}]),
]


@pytest.mark.parametrize(("message", "inputs"), BAD_INPUTS)
def test_bad_inputs_answer_400_with_a_message(state: ModelHostState, message: str,
                                               inputs: Any) -> None:
    app = create_app(state, extra_routes=[install_v2])
    resp = infer(app, "acme", inputs)
    assert resp.status_code == 400, resp.text
    assert list(resp.json()) == ["error"] and message in resp.json()["error"]


@pytest.mark.parametrize(("message", "body", "headers"), [
    ("not valid JSON", b"{nope", {}),
    ("Infinity is not a valid feature value", (
        b'{"inputs": [{"name": "input__0", "datatype": "FP32", '
        b'"shape": [1, 3], "data": [Infinity, 1, 2]}]}'), {}),
    ('"inputs" must be', b'{"instances": [[1, 2, 3]]}', {}),
    ("binary tensor extension", json.dumps({"inputs": [matrix_input(ROWS)]}).encode(),
     {"Inference-Header-Content-Length": "10"}),
    ("unknown output", json.dumps({"inputs": [matrix_input(ROWS)],
                                   "outputs": [{"name": "logit"}]}).encode(), {}),
    ('"id" must be a string', json.dumps({"id": 7, "inputs": [matrix_input(ROWS)]}).encode(),
     {}),
    ("nested too deeply", b"[" * 100_000 + b"]" * 100_000, {}),
    ("digits", b'{"inputs": [{"data": [' + b"9" * 5000 + b"]}]}", {}),
    ("FP32 range", json.dumps({"inputs": [matrix_input([[10**400, 1, 2]])]}).encode(), {}),
])
def test_malformed_bodies_answer_400(state: ModelHostState, message: str, body: bytes,
                                     headers: dict[str, str]) -> None:
    app = create_app(state, extra_routes=[install_v2])
    resp = call(app, "POST", "/v2/models/acme/infer", content=body,
                headers={"content-type": "application/json", **headers})
    assert resp.status_code == 400 and message in resp.json()["error"], resp.text


def test_content_type_must_be_json_as_on_v1(state: ModelHostState) -> None:
    app = create_app(state, extra_routes=[install_v2])
    body = json.dumps({"inputs": [matrix_input(ROWS)]}).encode()
    for ok in ("application/json; charset=utf-8", "application/vnd.x+json"):
        assert call(app, "POST", "/v2/models/acme/infer", content=body,
                    headers={"content-type": ok}).status_code == 200
    resp = call(app, "POST", "/v2/models/acme/infer", content=body,
                headers={"content-type": "text/plain"})
    assert resp.status_code == 415 and "Content-Type" in resp.json()["error"]


def test_body_over_the_ingress_cap_is_413(reg: Registry) -> None:
    state = ModelHostState(ServeSettings(registry=reg.root, ingress_max_body_bytes=200), reg)
    app = create_app(state, extra_routes=[install_v2])
    assert infer(app, "acme", [matrix_input(ROWS[:1])]).status_code == 200
    big = infer(app, "acme", [matrix_input([[0.123456789] * 3] * 20)])
    assert big.status_code == 413 and big.json() == {"error": "request body over 200 bytes"}


def test_unknown_tenant_404_and_unloadable_model_503(state: ModelHostState,
                                                     reg: Registry) -> None:
    app = create_app(state, extra_routes=[install_v2])
    resp = infer(app, "nobody", [matrix_input(ROWS)])
    assert resp.status_code == 404 and resp.json() == {"error": "unknown tenant 'nobody'"}
    production = reg.get("globex").production
    assert production is not None
    path = Path(production.artifact_uri)
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0x55
    path.write_bytes(bytes(raw))
    broken = infer(app, "globex", [matrix_input(ROWS)])
    assert broken.status_code == 503 and list(broken.json()) == ["error"]
    assert call(app, "GET", "/v2/models/globex").status_code == 200  # from the index


def test_api_keys_reach_only_their_tenant(state: ModelHostState, tmp_path: Path) -> None:
    path = str(tmp_path / "keys.json")
    acme_key = add_key(path, "acme")
    app = create_app(state, KeyStore.load(path), extra_routes=[install_v2])
    mine = {"authorization": f"Bearer {acme_key}"}
    assert infer(app, "acme", [matrix_input(ROWS)]).status_code == 401
    assert call(app, "POST", "/v2/models/acme/infer", json={"inputs": [matrix_input(ROWS)]},
                headers=mine).status_code == 200
    other = call(app, "POST", "/v2/models/globex/infer", json={"inputs": [matrix_input(ROWS)]},
                 headers=mine)
    assert other.status_code == 403 and "globex" in other.json()["error"]
    assert call(app, "GET", "/v2/models/globex", headers={"x-api-key": acme_key}
                ).status_code == 403
    assert call(app, "GET", "/v2/models/globex/ready").status_code == 401
    for open_path in ("/v2", "/v2/health/live", "/v2/health/ready"):
        assert call(app, "GET", open_path).status_code == 200


class _Recorder:
    """A shadow hook that records what it is shown."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str]] = []

    def after_predict(self, tenant_id: str, production: ModelVersion, x: np.ndarray,
                      predictions: np.ndarray, request_id: str, synthetic: bool,
                      latency_s: float) -> None:
        self.calls.append((tenant_id, production.version, request_id))

    def pinned_versions(self, tenant_id: str) -> list[int]:
        return []

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        pass

    def close(self) -> None:
        pass


def test_production_infers_reach_the_shadow_hook_pinned_ones_do_not(
        state: ModelHostState) -> None:
    recorder = _Recorder()
    state.shadow = recorder
    app = create_app(state, extra_routes=[install_v2])
    infer(app, "acme", [matrix_input(ROWS)], id="abc")
    infer(app, "acme", [matrix_input(ROWS)], "/versions/1", id="pinned")
    long_id = infer(app, "acme", [matrix_input(ROWS)], id="x" * 500)
    assert long_id.json()["id"] == "x" * 500  # echoed as sent; the shadow log gets a fresh one
    assert recorder.calls[0] == ("acme", 2, "abc") and len(recorder.calls) == 2
    assert len(recorder.calls[1][2]) == 32


@pytest.mark.parametrize(("path", "label"), [
    ("/v2", "v2_server"), ("/v2/", "v2_server"), ("/v2/health/live", "v2_health"),
    ("/v2/health/ready", "v2_health"), ("/v2/models/acme", "v2_metadata"),
    ("/v2/models/acme/versions/3", "v2_metadata"), ("/v2/models/acme/ready", "v2_ready"),
    ("/v2/models/acme/versions/3/ready", "v2_ready"), ("/v2/models/acme/infer", "v2_infer"),
    ("/v2/models/acme/versions/3/infer", "v2_infer"), ("/v2/models", "v2_other"),
    ("/v2/models/acme/versions", "v2_other"), ("/v2/repository/index", "v2_other"),
    ("/v2/models/acme/config", "v2_other"), ("/v1/tenants/acme/predict", None),
    ("/v20", None), ("/metrics", None),
])
def test_route_labels_are_bounded(path: str, label: str | None) -> None:
    assert v2_route_label(path) == label


def test_requests_are_counted_under_the_v2_route_labels(state: ModelHostState) -> None:
    assert route_label("/v2/models/acme/infer") == "v2_infer"  # api.route_label delegates
    app = create_app(state, extra_routes=[install_v2])
    infer(app, "acme", [matrix_input(ROWS)])
    infer(app, "acme", [])  # no inputs: 400
    call(app, "GET", "/v2/models/acme")
    metrics = call(app, "GET", "/metrics").text
    assert 'tenantry_requests_total{code="200",route="v2_infer"} 1.0' in metrics
    assert 'tenantry_requests_total{code="400",route="v2_infer"} 1.0' in metrics
    assert 'tenantry_requests_total{code="200",route="v2_metadata"} 1.0' in metrics
    assert "acme" not in metrics
