"""Batch scoring per objective and per training spec (no Ray): regression values from a
Parquet table with its own tenant and time columns (and a categorical feature), multiclass
probability lists, each equal to XGBoost to 1e-6."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import xgboost as xgb
from deltalake import DeltaTable

import engine.batch.job as job_mod
from engine.batch import ScoreSettings, run_scoring
from engine.cli import main
from registry import Registry
from tests.conftest import publish_models
from training.spec import parse_spec

from .conftest import DATES, FEATURES, SHARDS, feature_rows, run_here, write_features

QUIET = ScoreSettings(progress=False)
PLANS = ("basic", "plus", "pro")
SPEC_FEATURES = ("spend", "visits", "plan")


def _publish(reg: Registry, tenant: str, booster: xgb.Booster, run: str, **fields: Any) -> None:
    publish_models(reg, {tenant: bytes(booster.save_raw("ubj"))}, run,
                   features=tuple(booster.feature_names or ()), metrics={}, **fields)


def _frame(spend: Any, visits: Any, plan: Any) -> pd.DataFrame:
    return pd.DataFrame({"spend": np.asarray(spend, np.float64),
                         "visits": np.asarray(visits, np.float64),
                         "plan": pd.Categorical(list(plan), categories=list(PLANS))})


# categorical data: train_tiny trains numeric features only
def _regressor(seed: int) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    n = 300
    frame = _frame(rng.normal(size=n) * 10, rng.integers(0, 20, n), rng.choice(PLANS, n))
    y = 3 * frame["spend"] + (frame["plan"] == "pro") * 40 + rng.normal(size=n)
    return xgb.train({"objective": "reg:squarederror", "max_depth": 3, "nthread": 1,
                      "max_cat_to_onehot": 1}, xgb.DMatrix(frame, y, enable_categorical=True), 10)


def _spec_table(tenants: list[str], seed: int = 0) -> pa.Table:
    """Rows of ``customer`` on two days, with a timestamp ``seen_at``, shuffled."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[Any]] = {"customer": [], "seen_at": [], "spend": [], "visits": [],
                                  "plan": [], "target": []}
    for day in ("2024-05-01", "2024-05-02"):
        for t in tenants:
            for _ in range(int(rng.integers(3, 12))):
                rows["customer"].append(t)
                rows["seen_at"].append(dt.datetime.fromisoformat(day).replace(
                    hour=int(rng.integers(0, 24)), tzinfo=dt.UTC))
                rows["spend"].append(None if rng.random() < 0.1 else float(rng.normal() * 10))
                rows["visits"].append(int(rng.integers(0, 20)))
                rows["plan"].append(str(rng.choice([*PLANS, "legacy"])) if rng.random() > 0.1
                                    else None)
                rows["target"].append(float(rng.normal()))
    order = rng.permutation(len(rows["customer"]))
    return pa.table({k: [v[i] for i in order] for k, v in rows.items()})


@pytest.fixture()
def spec_world(tmp_path: Path) -> dict[str, Any]:
    reg = Registry.create(str(tmp_path / "registry"), num_shards=SHARDS)
    tenants = [f"c{i}" for i in range(5)]
    models = {t: _regressor(i) for i, t in enumerate(tenants[:4])}
    types = ("float", "float", "categorical")
    for t, booster in models.items():
        _publish(reg, t, booster, f"run-{t}", objective="reg:squarederror",
                 feature_types=types, params={"categories": {"plan": list(PLANS)}})
    table = _spec_table(tenants)
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    spec_doc = {"table": str(path), "tenant_column": "customer", "time_column": "seen_at",
                "label_column": "target", "objective": "regression",
                "features": list(SPEC_FEATURES)}
    spec_file = tmp_path / "spec.json"  # JSON is YAML
    spec_file.write_text(json.dumps(spec_doc))
    return {"reg": reg, "models": models, "table": table, "spec": parse_spec(spec_doc),
            "spec_file": str(spec_file), "out": str(tmp_path / "scores"), "tenants": tenants}


def _day_rows(table: pa.Table, tenant: str, day: str) -> list[dict[str, Any]]:
    return [r for r in table.to_pylist()
            if r["customer"] == tenant and r["seen_at"].strftime("%Y-%m-%d") == day]


def test_regression_scored_from_a_spec_table(spec_world: dict[str, Any]) -> None:
    w = spec_world
    report = run_scoring(None, w["reg"], w["out"], spec=w["spec"], settings=QUIET,
                         runner=run_here)
    assert report.date == "2024-05-02" and report.tenants == 4
    assert [f.tenant_id for f in report.failed] == ["c4"]  # rows but no model
    out = DeltaTable(w["out"]).to_pyarrow_table()
    assert "scores" not in out.column_names  # no multiclass model: the original columns
    assert set(out.column("date").to_pylist()) == {"2024-05-02"}
    for tenant, booster in w["models"].items():
        rows = _day_rows(w["table"], tenant, "2024-05-02")
        mine = out.filter(pc.equal(out.column("tenant_id"), tenant)).sort_by("row_index")
        assert mine.column("row_index").to_pylist() == list(range(len(rows)))  # scan order
        seen = [r["plan"] if r["plan"] in PLANS else None for r in rows]  # "legacy": missing
        want = booster.inplace_predict(_frame([np.nan if r["spend"] is None else r["spend"]
                                               for r in rows],
                                              [r["visits"] for r in rows], seen))
        assert np.ptp(want) > 1  # raw values, not probabilities
        np.testing.assert_allclose(mine.column("score").to_pylist(), want, atol=1e-6,
                                   rtol=1e-6)
        assert set(mine.column("shard").to_pylist()) == {w["reg"].shard_of(tenant)}


def test_score_spec_through_the_cli(spec_world: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(job_mod, "ray_runner", lambda settings: run_here)
    w = spec_world
    argv = ["score", "--spec", w["spec_file"], "--registry", w["reg"].root, "--out", w["out"],
            "--date", "2024-05-01", "--json", "--no-progress"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["tenants"] == 4 and doc["run_id"] == "score-2024-05-01"
    assert main(["score", "--registry", w["reg"].root, "--out", w["out"]]) != 0
    assert "--data PATH or --spec FILE" in capsys.readouterr().err


def test_multiclass_writes_probability_lists(tmp_path: Path) -> None:
    reg = Registry.create(str(tmp_path / "registry"), num_shards=SHARDS)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, len(FEATURES)))
    y = np.digitize(x[:, 0] - x[:, 3], [-0.5, 0.5])
    # multi-class, and a binary model on the same rows (train_tiny makes its own rows)
    multi = xgb.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 3,
                       "nthread": 1}, xgb.DMatrix(x, y, feature_names=list(FEATURES)), 8)
    binary = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
                       xgb.DMatrix(x, (y == 2).astype(int), feature_names=list(FEATURES)), 8)
    _publish(reg, "m0", multi, "r1", objective="multi:softprob", num_class=3)
    _publish(reg, "b0", binary, "r2")
    data = write_features(str(tmp_path / "features"), feature_rows(["m0", "b0"]))
    out = str(tmp_path / "scores")
    report = run_scoring(data, reg, out, settings=QUIET, runner=run_here)
    assert report.tenants == 2 and not report.failed
    table = DeltaTable(out).to_pyarrow_table()
    assert table.schema.field("scores").type == pa.list_(pa.float64())
    rows = DeltaTable(data).to_pyarrow_table().to_pylist()
    for tenant, booster in (("m0", multi), ("b0", binary)):
        mine = table.filter(pc.equal(table.column("tenant_id"), tenant)).sort_by("row_index")
        feats = np.array([[np.nan if r[f] is None else r[f] for f in FEATURES] for r in rows
                          if r["tenant_id"] == tenant and r["date"] == DATES[-1]], np.float32)
        want = booster.inplace_predict(feats)
        if tenant == "m0":
            assert mine.column("score").null_count == mine.num_rows
            got = np.array(mine.column("scores").to_pylist())
            assert got.shape == (len(feats), 3)
            np.testing.assert_allclose(got, want, atol=1e-6)
        else:
            assert mine.column("scores").null_count == mine.num_rows
            np.testing.assert_allclose(mine.column("score").to_pylist(), want, atol=1e-6)
