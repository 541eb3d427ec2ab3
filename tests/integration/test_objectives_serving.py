"""Regression, multiclass and categorical-feature models through the real ingress (HAProxy ->
model hosts on Ray Serve): /v1 and /v2 answers equal XGBoost's to 1e-6.

The tenants are published into the session's ``served_registry`` (new ids, so the other
serving tests' tenants are untouched) and called once the hosts' snapshots have them.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from tests.conftest import publish_models, wait_for

pytestmark = pytest.mark.timeout(600)

NUM = ("a", "b", "c")
COLORS = ("blue", "green", "red")


def _publish(reg: Any, tenant: str, booster: xgb.Booster, run: str, **fields: Any) -> None:
    publish_models(reg, {tenant: bytes(booster.save_raw("ubj"))}, run,
                   features=tuple(booster.feature_names or ()), metrics={"rmse": 1.0}, **fields)


def _frame(rows: list[list[Any]]) -> pd.DataFrame:
    return pd.DataFrame({"a": np.array([r[0] for r in rows], dtype=np.float64),
                         "color": pd.Categorical([r[1] for r in rows], categories=list(COLORS))})


@pytest.fixture(scope="module")
def models(serving: Any, served_registry: Any) -> dict[str, xgb.Booster]:
    # multi-class and categorical models beside a regression on the same rows
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 3))
    y = 2 * x[:, 0] - x[:, 1] + rng.normal(size=300)
    reg_model = xgb.train({"objective": "reg:squarederror", "max_depth": 3, "nthread": 1},
                          xgb.DMatrix(x, y, feature_names=list(NUM)), 10)
    classes = np.digitize(x[:, 0] + x[:, 2], [-0.7, 0.7])
    multi = xgb.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 3,
                       "nthread": 1}, xgb.DMatrix(x, classes, feature_names=list(NUM)), 8)
    rows: list[list[Any]] = [[float(v), str(rng.choice(COLORS))] for v in x[:, 0]]
    labels = np.array([int((r[1] == "red") != (float(r[0]) > 0)) for r in rows])
    cat = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1,
                     "max_cat_to_onehot": 1},
                    xgb.DMatrix(_frame(rows), labels, enable_categorical=True), 8)
    _publish(served_registry, "obj-reg", reg_model, "objectives-1",
             objective="reg:squarederror")
    _publish(served_registry, "obj-multi", multi, "objectives-2", objective="multi:softprob",
             num_class=3)
    _publish(served_registry, "obj-cat", cat, "objectives-3",
             feature_types=("float", "categorical"),
             params={"categories": {"color": list(COLORS)}})
    return {"obj-reg": reg_model, "obj-multi": multi, "obj-cat": cat}


@pytest.fixture()
def client(serving: Any, models: dict[str, xgb.Booster]) -> Any:
    with httpx.Client(base_url=serving.url, timeout=30) as c:
        for tenant in models:  # every host refreshes its snapshot every 0.5 s
            wait_for(lambda t=tenant: c.get(f"/v2/models/{t}/ready").status_code == 200,
                     timeout=30)
        yield c


def _v1(client: httpx.Client, tenant: str, rows: list[Any]) -> Any:
    resp = client.post(f"/v1/tenants/{tenant}/predict", json={"instances": rows})
    assert resp.status_code == 200, resp.text
    return resp.json()["predictions"]


def _v2(client: httpx.Client, tenant: str, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    resp = client.post(f"/v2/models/{tenant}/infer", json={"inputs": inputs})
    assert resp.status_code == 200, resp.text
    (out,) = resp.json()["outputs"]
    return dict(out)


def test_objectives_through_the_ingress(client: httpx.Client,
                                        models: dict[str, xgb.Booster]) -> None:
    x = np.random.default_rng(8).normal(size=(25, 3)).astype(np.float32)
    x[3, 1] = np.nan
    rows = [[None if np.isnan(v) else float(v) for v in r] for r in x]
    tensor = {"name": "input__0", "datatype": "FP32", "shape": [25, 3],
              "data": [v for r in rows for v in r]}

    want = models["obj-reg"].inplace_predict(x)
    np.testing.assert_allclose(_v1(client, "obj-reg", rows), want, atol=1e-6, rtol=1e-6)
    out = _v2(client, "obj-reg", [tensor])
    assert (out["name"], out["shape"]) == ("predict", [25])
    np.testing.assert_allclose(out["data"], want, atol=1e-6, rtol=1e-6)

    want = models["obj-multi"].inplace_predict(x)
    got = _v1(client, "obj-multi", rows)
    assert np.array(got).shape == (25, 3)
    np.testing.assert_allclose(got, want, atol=1e-6)
    out = _v2(client, "obj-multi", [tensor])
    assert (out["name"], out["shape"]) == ("probabilities", [25, 3])
    np.testing.assert_allclose(np.array(out["data"]).reshape(25, 3), want, atol=1e-6)
    meta = client.get("/v2/models/obj-multi").json()
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]

    cat_rows: list[list[Any]] = [[0.4, "red"], [-0.3, "blue"], [None, "green"], [1.0, None],
                                 [0.2, "mauve"]]
    seen = [r if r[1] != "mauve" else [r[0], None] for r in cat_rows]
    want = models["obj-cat"].inplace_predict(_frame(seen))
    np.testing.assert_allclose(_v1(client, "obj-cat", cat_rows), want, atol=1e-6)
    inputs = [{"name": "a", "datatype": "FP32", "shape": [5], "data": [r[0] for r in cat_rows]},
              {"name": "color", "datatype": "BYTES", "shape": [5],
               "data": [r[1] for r in cat_rows]}]
    out = _v2(client, "obj-cat", inputs)
    assert out["name"] == "probability"
    np.testing.assert_allclose(out["data"], want, atol=1e-6)
    refused = client.post("/v1/tenants/obj-cat/predict", json={"instances": [[0.4, 2]]})
    assert refused.status_code == 422 and "categorical" in refused.json()["detail"]
