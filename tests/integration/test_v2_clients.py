"""Open Inference Protocol clients nobody here wrote (tritonclient, kserve) against a model
host's app under a real uvicorn server on loopback (no Ray)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest

from engine.serving.api import create_app
from engine.serving.host import ModelHostState
from engine.serving.server import ThreadedServer
from engine.serving.v2 import install_v2
from engine.settings import ServeSettings
from registry import Registry

from .conftest import FEATURES, publish, train_bytes

KSERVE_MISSING = "kserve is not installed (a dev extra: `make install` brings it)"


@dataclass(frozen=True)
class Served:
    """A running model host: its URL and the registry behind it."""

    url: str
    host: str
    registry: Registry


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """acme at v1 and v2 (production v2), globex at v1, served with the V2 routes."""
    reg = Registry.create(str(tmp_path_factory.mktemp("v2") / "registry"), num_shards=2)
    publish(reg, {"acme": train_bytes(1), "globex": train_bytes(2)}, "r1")
    publish(reg, {"acme": train_bytes(4)}, "r2")
    state = ModelHostState(ServeSettings(registry=reg.root), reg)
    server = ThreadedServer(create_app(state, extra_routes=[install_v2]), "127.0.0.1", 0,
                            name="tenantry-v2-test")
    port = server.start()
    yield Served(f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", reg)
    server.stop()
    state.close()


def rows(n: int = 6, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, len(FEATURES))).astype(np.float32)
    return x


def v1_predict(served: Served, tenant: str, x: np.ndarray) -> np.ndarray:
    resp = httpx.post(f"{served.url}/v1/tenants/{tenant}/predict",
                      json={"instances": [[None if np.isnan(v) else float(v) for v in r]
                                          for r in x]}, timeout=30)
    assert resp.status_code == 200, resp.text
    return np.array(resp.json()["predictions"])


# -- tritonclient ------------------------------------------------------------------------

@pytest.fixture()
def triton(served: Served) -> Iterator[Any]:
    http = pytest.importorskip("tritonclient.http",
                               reason="tritonclient[http] is not installed (dev extras)")
    client = http.InferenceServerClient(served.host, connection_timeout=30,
                                        network_timeout=30)
    yield client
    client.close()


def triton_input(x: np.ndarray, datatype: str = "FP32", binary: bool = False) -> Any:
    from tritonclient.http import InferInput

    tensor = InferInput("input__0", list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def triton_output() -> Any:
    from tritonclient.http import InferRequestedOutput

    return InferRequestedOutput("probability", binary_data=False)


def test_triton_health_and_metadata(served: Served, triton: Any) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    server = triton.get_server_metadata()
    assert server["name"] == "tenantry" and server["extensions"] == []
    assert triton.is_model_ready("acme") and triton.is_model_ready("acme", "1")
    assert not triton.is_model_ready("nobody") and not triton.is_model_ready("acme", "9")
    meta = triton.get_model_metadata("acme")
    assert meta["name"] == "acme" and meta["versions"] == ["2", "1"]
    assert meta["platform"] == "xgboost"
    assert meta["inputs"][0]["shape"] == [-1, len(FEATURES)]
    assert meta["inputs"][0]["parameters"]["feature_names"] == list(FEATURES)
    assert meta["outputs"][0]["name"] == "probability"
    assert triton.get_model_metadata("acme", "1")["name"] == "acme"


def test_triton_infer_matches_v1(served: Served, triton: Any) -> None:
    x = rows()
    expected = v1_predict(served, "acme", x)
    result = triton.infer("acme", [triton_input(x)], outputs=[triton_output()],
                          request_id="r-1")
    assert result.get_response()["id"] == "r-1"
    assert result.get_response()["model_version"] == "2"
    np.testing.assert_allclose(result.as_numpy("probability"), expected, atol=1e-6)
    # without requested outputs the client asks for binary outputs; JSON comes back
    plain = triton.infer("acme", [triton_input(x.astype(np.float64), "FP64")])
    np.testing.assert_allclose(plain.as_numpy("probability"), expected, atol=1e-6)
    ints = np.array([[1, -2, 3, 0, 5]], dtype=np.int64)
    got = triton.infer("acme", [triton_input(ints, "INT64")], outputs=[triton_output()])
    np.testing.assert_allclose(got.as_numpy("probability"),
                               v1_predict(served, "acme", ints.astype(np.float32)), atol=1e-6)


def test_triton_pinned_version(served: Served, triton: Any) -> None:
    x = rows(seed=1)
    v1_result = triton.infer("acme", [triton_input(x)], model_version="1",
                             outputs=[triton_output()])
    assert v1_result.get_response()["model_version"] == "1"
    production = triton.infer("acme", [triton_input(x)], model_version="2",
                              outputs=[triton_output()]).as_numpy("probability")
    np.testing.assert_allclose(production, v1_predict(served, "acme", x), atol=1e-6)
    assert not np.allclose(v1_result.as_numpy("probability"), production, atol=1e-6)


def test_triton_nan_is_a_missing_value(served: Served, triton: Any) -> None:
    x = rows()
    x[0, 1] = np.nan  # tritonclient writes a numpy NaN as the JSON literal NaN
    got = triton.infer("acme", [triton_input(x)], outputs=[triton_output()])
    np.testing.assert_allclose(got.as_numpy("probability"), v1_predict(served, "acme", x),
                               atol=1e-6)


def test_triton_errors(served: Served, triton: Any) -> None:
    from tritonclient.utils import InferenceServerException

    cases = [
        ("nobody", [triton_input(rows())], "", "404", "unknown tenant"),
        ("acme", [triton_input(rows())], "9", "404", "no version 9"),
        ("acme", [triton_input(rows()[:, :3])], "", "400", f"expects [-1, {len(FEATURES)}]"),
        ("acme", [triton_input(rows(), binary=True)], "", "400", "binary tensor extension"),
    ]
    for model, inputs, version, status, message in cases:
        with pytest.raises(InferenceServerException) as info:
            triton.infer(model, inputs, model_version=version)
        assert info.value.status() == status and message in info.value.message(), message


# -- kserve ------------------------------------------------------------------------------

def kserve_call(fn: Any) -> Any:
    """Run ``fn(client)`` with a V2 ``InferenceRESTClient`` on a fresh event loop."""
    kserve = pytest.importorskip("kserve", reason=KSERVE_MISSING)

    async def go() -> Any:
        client = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2", timeout=30))
        try:
            return await fn(client)
        finally:
            await client.close()

    return asyncio.run(go())


def kserve_request(model: str, x: np.ndarray) -> Any:
    from kserve import InferInput, InferRequest

    tensor = InferInput("input__0", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=False)
    return InferRequest(model_name=model, infer_inputs=[tensor], request_id="k-1")


def test_kserve_health_infer_and_pinned_version(served: Served) -> None:
    x = rows(seed=2)

    async def go(client: Any) -> tuple[Any, ...]:
        return (await client.is_server_live(served.url), await client.is_server_ready(served.url),
                await client.is_model_ready(served.url, "acme"),
                await client.is_model_ready(served.url, "nobody"),
                await client.infer(served.url, kserve_request("acme", x), "acme"),
                await client.infer(served.url, kserve_request("acme", x), "acme/versions/1"))

    live, ready, model_ready, unknown_ready, prod, pinned = kserve_call(go)
    assert live and ready and model_ready and not unknown_ready
    assert prod.id == "k-1" and prod.model_name == "acme"
    np.testing.assert_allclose(prod.outputs[0].as_numpy(), v1_predict(served, "acme", x),
                               atol=1e-6)
    assert not np.allclose(pinned.outputs[0].as_numpy(), prod.outputs[0].as_numpy(), atol=1e-6)


def test_kserve_errors(served: Served) -> None:
    async def go(client: Any) -> list[httpx.HTTPStatusError]:
        errors = []
        for model, x in (("nobody", rows()), ("acme", rows()[:, :2])):
            try:
                await client.infer(served.url, kserve_request(model, x), model)
            except httpx.HTTPStatusError as exc:
                errors.append(exc)
        return errors

    unknown, wrong_shape = kserve_call(go)
    assert unknown.response.status_code == 404 and "unknown tenant" in str(unknown)
    assert wrong_shape.response.status_code == 400 and "expects [-1, 5]" in str(wrong_shape)
