"""One bucket holding every kind of model at once (no Ray): forests of different tree counts,
feature subsets and orders, objectives and shadow versions, walked together, next to a
multi-class and a categorical model served by their Booster; each tenant's scores equal
serving's predict exactly and XGBoost's to 1e-6, missing values and infinities included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import xgboost as xgb
from deltalake import DeltaTable

from engine.batch import ScoreSettings, run_scoring
from engine.serving.model import load_model
from registry import Registry
from tests.conftest import publish_models, train_booster

from .conftest import run_here, write_features

DAY = "2024-03-02"
COLUMNS = ("a", "b", "c", "d", "e")
PLANS = ("basic", "plus", "pro")
# tenant -> (features in the model's order, objective, trees, depth)
FORESTS: dict[str, tuple[tuple[str, ...], str, int, int]] = {
    "f0": (("a", "b", "c", "d"), "binary:logistic", 12, 4),
    "f1": (("d", "a", "e"), "binary:logistic", 12, 5),
    "f2": (("e", "c"), "reg:squarederror", 7, 3),
    "f3": (("b",), "binary:logitraw", 12, 2),
}


def _train(seed: int, features: tuple[str, ...], objective: str, trees: int,
           depth: int) -> xgb.Booster:
    return train_booster(seed, features=features, rows=400, rounds=trees, depth=depth,
                         objective=objective, missing=0.15)


def _frame(x: np.ndarray, plan: list[Any]) -> pd.DataFrame:
    return pd.DataFrame({"a": x[:, 0], "plan": pd.Categorical(plan, categories=list(PLANS))})


def _publish(reg: Registry, tenant: str, booster: xgb.Booster, run: str, alias: str,
             **fields: Any) -> None:
    publish_models(reg, {tenant: bytes(booster.save_raw("ubj"))}, run, alias=alias,
                   features=tuple(booster.feature_names or ()), metrics={}, **fields)


def _table(tenants: list[str]) -> pa.Table:
    rng = np.random.default_rng(3)
    n = 40 * len(tenants)
    x = rng.normal(size=(n, len(COLUMNS))) * 3
    x[rng.random(x.shape) < 0.15] = np.nan
    # infinities (rows of f0, f1, f2, f3 in turn): a null score for the models reading them
    x[6, 1], x[7, 4], x[8, 4], x[9, 1] = -np.inf, np.inf, np.inf, np.inf
    cols: dict[str, Any] = {c: x[:, j] for j, c in enumerate(COLUMNS)}
    plan = [str(rng.choice([*PLANS, "legacy"])) for _ in range(n)]
    return pa.table({"tenant_id": [tenants[i % len(tenants)] for i in range(n)],
                     "date": [DAY] * n, "shard": pa.array([0] * n, pa.int32()), **cols,
                     "plan": plan})


@pytest.fixture()
def bucket(tmp_path: Path) -> dict[str, Any]:
    reg = Registry.create(str(tmp_path / "registry"), num_shards=1)  # one bucket
    boosters: dict[tuple[str, str], xgb.Booster] = {}
    for i, (tenant, spec) in enumerate(FORESTS.items()):
        boosters[tenant, "production"] = _train(i, *spec)
        _publish(reg, tenant, boosters[tenant, "production"], f"p-{tenant}", "production",
                 objective=spec[1])
    boosters["f1", "shadow"] = _train(40, ("d", "a", "e"), "binary:logistic", 9, 3)
    _publish(reg, "f1", boosters["f1", "shadow"], "s-f1", "shadow")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 1)) * 3
    y = np.digitize(x[:, 0], [-1, 1])
    # a multi-class and a categorical model, which train_tiny does not make
    boosters["m0", "production"] = xgb.train(
        {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "nthread": 1},
        xgb.DMatrix(x, y, feature_names=["a"]), 6)
    _publish(reg, "m0", boosters["m0", "production"], "p-m0", "production",
             objective="multi:softprob", num_class=3)
    frame = _frame(x, list(rng.choice(PLANS, 300)))
    boosters["k0", "production"] = xgb.train(
        {"objective": "reg:squarederror", "max_depth": 3, "nthread": 1, "max_cat_to_onehot": 1},
        xgb.DMatrix(frame, x[:, 0] + (frame["plan"] == "pro") * 5, enable_categorical=True), 6)
    _publish(reg, "k0", boosters["k0", "production"], "p-k0", "production",
             objective="reg:squarederror", feature_types=("float", "categorical"),
             params={"categories": {"plan": list(PLANS)}})
    table = _table([*FORESTS, "m0", "k0"])
    data = write_features(str(tmp_path / "features"), table)
    return {"reg": reg, "boosters": boosters, "table": table, "data": data,
            "out": str(tmp_path / "scores")}


def _rows(table: pa.Table, tenant: str) -> pa.Table:
    return table.filter(pc.equal(table.column("tenant_id"), tenant))


def test_every_kind_of_model_in_one_bucket(bucket: dict[str, Any]) -> None:
    reg: Registry = bucket["reg"]
    report = run_scoring(bucket["data"], reg, bucket["out"], alias="shadow", runner=run_here,
                         settings=ScoreSettings(progress=False))
    assert report.buckets == 1 and report.tenants == 6 and not report.failed
    assert report.shadow_tenants == 1 and report.invalid_rows == 4
    out = DeltaTable(bucket["out"]).to_pyarrow_table()
    for (tenant, alias), booster in bucket["boosters"].items():
        rows = _rows(bucket["table"], tenant)
        mine = _rows(out, tenant).sort_by("row_index")
        names = tuple(booster.feature_names or ())
        if tenant == "k0":
            plan = [p if p in PLANS else None for p in rows.column("plan").to_pylist()]
            x = np.column_stack([rows.column("a").to_numpy(), np.zeros(rows.num_rows)])
            want = booster.inplace_predict(_frame(x, plan))
        else:
            x = np.column_stack([rows.column(c).to_numpy() for c in names]).astype(np.float32)
            want = booster.inplace_predict(x)
        column = "shadow_score" if alias == "shadow" else "scores" if tenant == "m0" else "score"
        got = np.array(mine.column(column).to_pylist(), dtype=np.float64)
        if tenant in FORESTS:
            bad = np.isinf(x).any(axis=1)
            assert np.isnan(got[bad]).all() and not np.isnan(got[~bad]).any()
            got, want, x = got[~bad], want[~bad], x[~bad]
            mv = reg.get(tenant).production if alias == "production" else reg.get(tenant).shadow
            assert mv is not None
            served = load_model(reg, mv)
            assert served.engine == "forest"
            np.testing.assert_array_equal(got, served.predict(x).astype(np.float64))
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6)
