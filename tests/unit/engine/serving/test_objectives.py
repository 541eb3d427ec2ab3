"""Regression, multiclass and categorical-feature models through /v1 and /v2 over ASGI
(no Ray): answers equal XGBoost's own predictions to 1e-6, shaped and named by objective."""

from __future__ import annotations

import asyncio
import json
import pickle
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from engine.serving.api import create_app
from engine.serving.host import ModelHostState
from engine.serving.v2 import install_v2
from engine.settings import ServeSettings
from registry import Registry
from tests.conftest import publish_models, train_booster

NUM = ("amount", "age", "velocity")
CAT = ("amount", "color", "age", "channel")
COLORS = ("blue", "green", "red", "teal")
CHANNELS = ("app", "web")
TOL = 1e-6


def _x(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    x = rng.normal(size=(n, width))
    x[rng.random(x.shape) < 0.1] = np.nan
    return x


def regression_model() -> xgb.Booster:
    return train_booster(1, features=NUM, rows=300, rounds=15, depth=4,
                         objective="reg:squarederror", missing=0.1)


# multi-class and categorical data: train_tiny trains one-output numeric models only
def multiclass_model() -> xgb.Booster:
    rng = np.random.default_rng(2)
    x = _x(rng, 300, 3)
    y = np.digitize(np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 2]), [-0.5, 0.5])
    return xgb.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 3,
                      "nthread": 1}, xgb.DMatrix(x, y, feature_names=list(NUM)), 10)


def categorical_frame(rows: list[list[Any]]) -> pd.DataFrame:
    """Rows of (amount, color, age, channel) as XGBoost takes them (None = missing)."""
    cols = list(zip(*rows, strict=True))
    return pd.DataFrame({
        "amount": np.array(cols[0], dtype=np.float64),
        "color": pd.Categorical(list(cols[1]), categories=list(COLORS)),
        "age": np.array(cols[2], dtype=np.float64),
        "channel": pd.Categorical(list(cols[3]), categories=list(CHANNELS)),
    })


def categorical_model(objective: str = "binary:logistic") -> xgb.Booster:
    rng = np.random.default_rng(3)
    n = 400
    color = rng.choice(COLORS, n)
    channel = rng.choice(CHANNELS, n)
    amount = rng.normal(size=n)
    age = rng.normal(size=n)
    rows = [[a, c if rng.random() > 0.05 else None, g, h]
            for a, c, g, h in zip(amount, color, age, channel, strict=True)]
    signal = (np.isin(color, ["red", "teal"]) * 1.5 + amount - (channel == "web")
              + 0.3 * rng.normal(size=n))
    y = signal if objective.startswith("reg") else (signal > 0.5).astype(int)
    return xgb.train({"objective": objective, "max_depth": 3, "nthread": 1,
                      "max_cat_to_onehot": 1},
                     xgb.DMatrix(categorical_frame(rows), y, enable_categorical=True), 12)


def publish(reg: Registry, tenant: str, booster: xgb.Booster, run: str, **fields: Any) -> int:
    """Publish ``booster`` as the tenant's production model, with the index fields given."""
    return publish_models(reg, {tenant: bytes(booster.save_raw("ubj"))}, run,
                          features=tuple(booster.feature_names or ()), metrics={"rmse": 0.5},
                          **fields)[tenant]


@pytest.fixture(scope="module")
def boosters() -> dict[str, xgb.Booster]:
    return {"reg": regression_model(), "multi": multiclass_model(),
            "cat": categorical_model(), "catreg": categorical_model("reg:squarederror")}


@pytest.fixture()
def reg(tmp_path: Path, boosters: dict[str, xgb.Booster]) -> Registry:
    reg = Registry.create(str(tmp_path / "reg"), 2)
    publish(reg, "reg", boosters["reg"], "r1", objective="reg:squarederror")
    publish(reg, "multi", boosters["multi"], "r2", objective="multi:softprob", num_class=3)
    types = tuple("categorical" if n in ("color", "channel") else "float" for n in CAT)
    cats = {"categories": {"color": list(COLORS), "channel": list(CHANNELS)}}
    publish(reg, "cat", boosters["cat"], "r3", feature_types=types, params=cats)
    publish(reg, "catreg", boosters["catreg"], "r4", objective="reg:squarederror",
            feature_types=types, params=cats)
    # the index says multiclass, the artifact is a binary model: never served
    publish(reg, "liar", boosters["cat"], "r5", objective="multi:softprob", num_class=3,
            feature_types=types, params=cats)
    return reg


@pytest.fixture()
def app(reg: Registry) -> Any:
    return create_app(ModelHostState(ServeSettings(registry=reg.root, max_rows=100), reg),
                      extra_routes=[install_v2])


def call(app: Any, method: str, path: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
            return await client.request(method, path, **kw)

    return asyncio.run(go())


def v1(app: Any, tenant: str, rows: list[Any]) -> httpx.Response:
    return call(app, "POST", f"/v1/tenants/{tenant}/predict", json={"instances": rows})


def infer(app: Any, tenant: str, inputs: list[dict[str, Any]], **extra: Any) -> httpx.Response:
    return call(app, "POST", f"/v2/models/{tenant}/infer", json={"inputs": inputs, **extra})


def numeric_rows(seed: int, n: int = 40) -> tuple[list[list[float | None]], np.ndarray]:
    x = _x(np.random.default_rng(seed), n, 3).astype(np.float32)
    return [[None if np.isnan(v) else float(v) for v in r] for r in x], x


def matrix(rows: list[list[Any]], datatype: str = "FP32") -> dict[str, Any]:
    return {"name": "input__0", "datatype": datatype, "shape": [len(rows), len(rows[0])],
            "data": [v for r in rows for v in r]}


def output(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    (out,) = resp.json()["outputs"]
    assert out["datatype"] == "FP32"
    return dict(out)


# -- the registry row ---------------------------------------------------------------------
def test_versions_carry_objective_classes_types_and_categories(reg: Registry) -> None:
    multi = reg.get("multi").to_json()["production"]
    assert (multi["objective"], multi["num_class"]) == ("multi:softprob", 3)
    assert multi["feature_types"] == ["float"] * 3 and multi["categories"] == {}
    cat = reg.get("cat").production
    assert cat is not None and cat.objective == "binary:logistic" and cat.num_class is None
    assert cat.feature_types == ("float", "categorical", "float", "categorical")
    assert cat.categories == {"color": COLORS, "channel": CHANNELS}
    assert cat.categorical == {"color", "channel"}
    doc = reg.get("cat").to_json()["production"]
    for key in ("version", "artifact_uri", "sha256", "size_bytes", "feature_names", "metrics",
                "run_id", "created_at"):  # the DESIGN.md keys stay
        assert key in doc
    assert doc["categories"] == {"color": list(COLORS), "channel": list(CHANNELS)}
    for mv in (cat, reg.get("reg").production):  # versions travel to Ray tasks
        assert pickle.loads(pickle.dumps(mv)) == mv


# -- regression ---------------------------------------------------------------------------
def test_regression_answers_raw_values(app: Any, boosters: dict[str, xgb.Booster]) -> None:
    rows, x = numeric_rows(10)
    want = boosters["reg"].inplace_predict(x)
    assert np.ptp(want) > 1  # values, not probabilities
    resp = v1(app, "reg", rows)
    assert resp.status_code == 200, resp.text
    got = np.array(resp.json()["predictions"])
    assert got.shape == (len(rows),)
    np.testing.assert_allclose(got, want, atol=TOL, rtol=TOL)
    out = output(infer(app, "reg", [matrix(rows)]))
    assert out["name"] == "predict" and out["shape"] == [len(rows)]
    np.testing.assert_allclose(out["data"], want, atol=TOL, rtol=TOL)
    per_feature = [{"name": n, "datatype": "FP64", "shape": [len(rows)],
                    "data": [r[i] for r in rows]} for i, n in enumerate(NUM)]
    np.testing.assert_allclose(output(infer(app, "reg", per_feature))["data"], want,
                               atol=TOL, rtol=TOL)
    meta = call(app, "GET", "/v2/models/reg").json()
    assert meta["outputs"] == [{"name": "predict", "datatype": "FP32", "shape": [-1]}]
    assert meta["parameters"] == {"objective": "reg:squarederror"}
    asked = infer(app, "reg", [matrix(rows)], outputs=[{"name": "predict"}])
    assert output(asked)["name"] == "predict"
    wrong = infer(app, "reg", [matrix(rows)], outputs=[{"name": "probability"}])
    assert wrong.status_code == 400 and "'predict'" in wrong.json()["error"]


# -- multiclass ---------------------------------------------------------------------------
def test_multiclass_answers_class_probabilities(app: Any,
                                                boosters: dict[str, xgb.Booster]) -> None:
    rows, x = numeric_rows(11)
    want = boosters["multi"].inplace_predict(x)
    assert want.shape == (len(rows), 3)
    resp = v1(app, "multi", rows)
    assert resp.status_code == 200, resp.text
    got = resp.json()["predictions"]
    assert isinstance(got[0], list) and len(got[0]) == 3
    np.testing.assert_allclose(np.array(got), want, atol=TOL)
    np.testing.assert_allclose(np.array(got).sum(axis=1), 1.0, atol=1e-5)
    named = [{n: v for n, v in zip(NUM, r, strict=True) if v is not None} for r in rows]
    np.testing.assert_allclose(np.array(v1(app, "multi", named).json()["predictions"]), want,
                               atol=TOL)
    one = v1(app, "multi", rows[:1]).json()["predictions"]
    assert np.array(one).shape == (1, 3)
    out = output(infer(app, "multi", [matrix(rows)]))
    assert out["name"] == "probabilities" and out["shape"] == [len(rows), 3]
    assert len(out["data"]) == 3 * len(rows)  # flat, row-major
    np.testing.assert_allclose(np.array(out["data"]).reshape(-1, 3), want, atol=TOL)
    meta = call(app, "GET", "/v2/models/multi").json()
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]


# -- categorical features -----------------------------------------------------------------
CAT_ROWS: list[list[Any]] = [
    [0.5, "red", 1.0, "web"],
    [-1.0, "blue", None, "app"],
    [None, None, 0.3, "web"],
    [2.0, "teal", -0.5, None],
    [0.1, "green", 0.0, "app"],
    [1.5, "purple", 0.7, "fax"],  # categories the model never saw: missing
]
SEEN_AS: list[list[Any]] = [r[:] for r in CAT_ROWS]
SEEN_AS[5][1] = SEEN_AS[5][3] = None


def _cat_want(booster: xgb.Booster) -> np.ndarray:
    return np.asarray(booster.inplace_predict(categorical_frame(SEEN_AS)))


@pytest.mark.parametrize("tenant,key", [("cat", "cat"), ("catreg", "catreg")])
def test_categorical_features_take_strings(app: Any, boosters: dict[str, xgb.Booster],
                                           tenant: str, key: str) -> None:
    want = _cat_want(boosters[key])
    assert want[5] == pytest.approx(float(boosters[key].predict(xgb.DMatrix(
        categorical_frame(SEEN_AS[5:]), enable_categorical=True))[0]), abs=TOL)
    resp = v1(app, tenant, CAT_ROWS)
    assert resp.status_code == 200, resp.text
    np.testing.assert_allclose(resp.json()["predictions"], want, atol=TOL, rtol=TOL)
    named = [{n: v for n, v in zip(CAT, r, strict=True) if v is not None} for r in CAT_ROWS]
    np.testing.assert_allclose(v1(app, tenant, named).json()["predictions"], want,
                               atol=TOL, rtol=TOL)
    n = len(CAT_ROWS)
    per_feature = [{"name": name, "datatype": "BYTES" if name in ("color", "channel")
                    else "FP32", "shape": [n], "data": [r[i] for r in CAT_ROWS]}
                   for i, name in enumerate(CAT)]
    out = output(infer(app, tenant, per_feature))
    assert out["name"] == ("probability" if tenant == "cat" else "predict")
    np.testing.assert_allclose(out["data"], want, atol=TOL, rtol=TOL)
    np.testing.assert_allclose(output(infer(app, tenant, [matrix(CAT_ROWS, "BYTES")]))["data"],
                               want, atol=TOL, rtol=TOL)


def test_categorical_refusals_say_what_is_wrong(app: Any) -> None:
    resp = v1(app, "cat", [[0.5, 3, 1.0, "web"]])
    assert resp.status_code == 422
    assert "feature color is categorical" in resp.json()["detail"]
    assert "got int '3'" in resp.json()["detail"]
    named = v1(app, "cat", [{"channel": 1.5}])
    assert named.status_code == 422 and "channel is categorical" in named.json()["detail"]
    text_for_number = v1(app, "cat", [[0.5, "red", "old", "web"]])
    assert text_for_number.status_code == 422
    assert "feature age: expected a number" in text_for_number.json()["detail"]
    n = 2
    numbers = [{"name": "color", "datatype": "INT32", "shape": [n], "data": [1, 2]}]
    resp = infer(app, "cat", numbers)
    assert resp.status_code == 400 and "color is categorical" in resp.json()["error"]
    numeric_as_bytes = [{"name": "amount", "datatype": "BYTES", "shape": [n],
                         "data": ["1", "2"]}]
    resp = infer(app, "cat", numeric_as_bytes)
    assert resp.status_code == 400 and "amount is numeric" in resp.json()["error"]
    fp32 = infer(app, "cat", [matrix([[0.5, 1.0, 1.0, 0.0]])])
    assert fp32.status_code == 400 and "BYTES tensor" in fp32.json()["error"]
    mixed = infer(app, "cat", [matrix([[0.5, 2, 1.0, "web"]], "BYTES")])
    assert mixed.status_code == 400 and "color is categorical" in mixed.json()["error"]
    bools = infer(app, "cat", [matrix([[0.5, True, 1.0, "web"]], "BYTES")])
    assert bools.status_code == 400 and "BYTES tensor holds strings" in bools.json()["error"]


def test_categorical_metadata(app: Any) -> None:
    meta = call(app, "GET", "/v2/models/cat").json()
    (inp,) = meta["inputs"]
    assert inp["datatype"] == "BYTES" and inp["shape"] == [-1, 4]
    assert inp["parameters"]["feature_types"] == ["float", "categorical", "float",
                                                  "categorical"]
    assert "BYTES" in inp["parameters"]["accepted_datatypes"]
    assert meta["outputs"] == [{"name": "probability", "datatype": "FP32", "shape": [-1]}]


def test_an_artifact_contradicting_its_index_row_is_not_served(app: Any) -> None:
    resp = v1(app, "liar", CAT_ROWS[:1])
    assert resp.status_code == 503 and "objective 'multi:softprob'" in resp.json()["detail"]


def test_openapi_declares_the_answer_shapes(app: Any) -> None:
    doc = call(app, "GET", "/openapi.json").json()
    preds = doc["components"]["schemas"]["PredictResponse"]["properties"]["predictions"]
    kinds = [json.dumps(k) for k in preds["anyOf"]]
    assert any('"items": {"type": "number"}' in k and "array" in k for k in kinds)
    assert any('"items": {"items": {"type": "number"}' in k for k in kinds)
    body = doc["paths"]["/v1/tenants/{tenant_id}/predict"]["post"]["requestBody"]
    assert "string" in json.dumps(body)
