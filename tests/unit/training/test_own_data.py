"""Training on a user's own table without Ray: any shape, any objective, per-tenant features.

Buckets run in this process in place of Ray Data (as in test_job.py). The table is a
Parquet file with other column names and no ``shard`` column: the job computes shards.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import mean_squared_error

import training.job as job_mod
from registry import Registry, shard_of
from training.bucket import BucketResult, BucketSpec, JobContext, train_bucket
from training.report import TrainingReport
from training.settings import TrainingSettings
from training.source import Layout, TableSource, part_of
from training.spec import TrainingSpec, parse_spec

DAYS = 4
START = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
SETTINGS = TrainingSettings(progress=False, scan_buckets=3)


@pytest.fixture()
def no_ray(monkeypatch: pytest.MonkeyPatch) -> list[BucketSpec]:
    """Run buckets in this process; returns the buckets that ran."""
    ran: list[BucketSpec] = []

    def run_here(ctx: JobContext, buckets: list[BucketSpec],
                 resources: dict[str, float]) -> Iterator[BucketResult]:
        for bucket in buckets:
            ran.append(bucket)
            yield train_bucket(ctx, bucket)

    monkeypatch.setattr(job_mod, "ensure_ray", lambda *args, **kwargs: None)
    monkeypatch.setattr(job_mod, "_run_buckets", run_here)
    return ran


def stores(tmp_path: Path, objective: str, seed: int = 0, n_stores: int = 7,
           rows_per_day: int = 40) -> str:
    """A Parquet file of store events: store, event_time, basket, visits, region, promo, y.

    ``promo`` is sent only by even-numbered stores (null for the others); ``region`` is text.
    """
    rng = np.random.default_rng(seed)
    parts = []
    for s in range(n_stores):
        n = DAYS * rows_per_day
        t = START + dt.timedelta(seconds=1) * np.sort(rng.integers(0, DAYS * 86400, n))
        basket, visits = rng.normal(50, 15, n), rng.poisson(3, n).astype(float)
        region = rng.choice(["north", "south", "east"], n)
        promo = rng.uniform(size=n) if s % 2 == 0 else np.full(n, np.nan)
        signal = (basket - 50) / 15 + (region == "north") * 1.5 + np.nan_to_num(promo) * 2
        if objective == "regression":
            y = 10 * signal + rng.normal(0, 1, n)
        elif objective == "multiclass":
            y = np.digitize(signal + rng.normal(0, 0.3, n), [-0.5, 0.8]).astype(float)
        else:
            y = (signal + rng.normal(0, 0.5, n) > 0.3).astype(float)
        parts.append(pa.table({
            "store": [f"store-{s}"] * n, "event_time": pa.array(t, pa.timestamp("us", tz="UTC")),
            "basket": basket, "visits": visits, "region": region,
            "promo": pa.array(promo, from_pandas=True), "y": y}))
    path = str(tmp_path / f"{objective}.parquet")
    pq.write_table(pa.concat_tables(parts), path, row_group_size=500)
    return path


def spec_for(path: str, objective: str, **extra: Any) -> TrainingSpec:
    return parse_spec({"table": path, "tenant_column": "store", "time_column": "event_time",
                       "label_column": "y", "objective": objective, "window_days": DAYS,
                       "xgboost": {"n_estimators": 8, "max_depth": 3},
                       "min_rows": {"train": 30, "holdout": 10}, **extra})


def _registry(tmp_path: Path) -> Registry:
    return Registry.create(str(tmp_path / "registry"), num_shards=4)


def test_scan_parts_split_tenants_by_hash() -> None:
    from training.parts import bucket_part

    ids = pa.chunked_array([["a", "b", None, "a"], ["c"]])
    assert part_of(ids, 3).tolist() == [bucket_part("a", 3), bucket_part("b", 3), -1,
                                        bucket_part("a", 3), bucket_part("c", 3)]


def test_a_parquet_file_without_shards_is_scanned_by_parts(tmp_path: Path,
                                                           no_ray: list[BucketSpec]) -> None:
    path = stores(tmp_path, "binary")
    assert TableSource.open(path, time_column="event_time").layout is Layout.SCAN
    reg = _registry(tmp_path)
    report = job_mod.run_training(None, reg.root, spec=spec_for(path, "binary"),
                                  settings=SETTINGS)
    assert sorted((b.shard, b.part, b.parts) for b in no_ray) == [(-1, 0, 3), (-1, 1, 3),
                                                                  (-1, 2, 3)]
    assert report.date == "2024-05-04" and report.trained == 7 == report.published
    doc = report.to_json()
    assert (doc["layout"], doc["objective"], doc["gate_metric"]) == ("scan", "binary", "auc")
    assert doc["categorical"] == ["region"]
    assert doc["dropped_features"] == {"promo": 3}  # odd stores never send it
    for tenant, mv in Registry.open(reg.root).production_versions().items():
        assert mv.shard == shard_of(tenant, 4)
        sends_promo = int(tenant.split("-")[1]) % 2 == 0
        assert mv.feature_names == (("basket", "visits", "region", "promo") if sends_promo
                                    else ("basket", "visits", "region"))
        booster = Registry.open(reg.root).load_booster(mv)
        assert tuple(booster.feature_names) == mv.feature_names
        assert booster.feature_types[2] == "c"
    row = reg.index.query("models", "tenant_id = 'store-0'").to_pylist()[0]
    assert (row["objective"], row["num_class"]) == ("binary:logistic", None)
    assert row["feature_types"] == ["float", "float", "categorical", "float"]


def test_regression_gate_uses_rmse_and_scores_production(tmp_path: Path,
                                                         no_ray: list[BucketSpec]) -> None:
    path = stores(tmp_path, "regression")
    reg = _registry(tmp_path)
    spec = spec_for(path, "regression", gate={"tolerance": 0.5})
    first = job_mod.run_training(None, reg.root, spec=spec, settings=SETTINGS,
                                 date="2024-05-03")
    second = job_mod.run_training(None, reg.root, spec=spec, settings=SETTINGS)
    assert first.published == second.published == 7
    assert second.to_json()["gate_metric"] == "rmse"
    mv = Registry.open(reg.root).history("store-1")[0]
    assert mv.version == 2 and {"rmse", "mae", "production_rmse", "label_mean"} <= \
        set(mv.metrics) and "auc" not in mv.metrics
    table = pq.read_table(path).to_pandas()
    hold = table[(table.store == "store-1") & (table.event_time.dt.day == 4)]
    booster = Registry.open(reg.root).load_booster(mv)
    p = booster.inplace_predict(hold[list(mv.feature_names)].astype(
        {"region": "category"}))
    assert np.sqrt(mean_squared_error(hold.y, p)) == pytest.approx(mv.metrics["rmse"], 1e-6)
    reasons = reg.index.query("aliases", "run_id = 'train-2024-05-04'",
                              columns="reason").column("reason").to_pylist()
    assert reasons and all(r.startswith("holdout rmse ") for r in reasons)
    row = reg.index.query("models", "tenant_id = 'store-1' AND version = 2").to_pylist()[0]
    assert row["objective"] == "reg:squarederror"


def test_multiclass_infers_classes_and_gates_on_mlogloss(tmp_path: Path,
                                                         no_ray: list[BucketSpec]) -> None:
    path = stores(tmp_path, "multiclass")
    reg = _registry(tmp_path)
    report = job_mod.run_training(None, reg.root, spec=spec_for(path, "multiclass"),
                                  settings=SETTINGS)
    doc = report.to_json()
    assert (doc["num_class"], doc["gate_metric"], doc["xgb_objective"]) == \
        (3, "mlogloss", "multi:softprob")
    assert report.trained == 7
    mv = Registry.open(reg.root).history("store-2")[0]
    booster = Registry.open(reg.root).load_booster(mv)
    table = pq.read_table(path).to_pandas()
    hold = table[(table.store == "store-2") & (table.event_time.dt.day == 4)]
    p = booster.inplace_predict(hold[list(mv.feature_names)].astype({"region": "category"}))
    assert p.shape == (len(hold), 3)
    assert sk_log_loss(hold.y, p, labels=[0, 1, 2]) == pytest.approx(mv.metrics["mlogloss"],
                                                                     1e-6)
    row = reg.index.query("models", "tenant_id = 'store-2'").to_pylist()[0]
    assert (row["objective"], row["num_class"]) == ("multi:softprob", 3)


def test_fraction_holdout_and_skip_reasons(tmp_path: Path, no_ray: list[BucketSpec]) -> None:
    path = stores(tmp_path, "binary", n_stores=3)
    extra = pa.table({"store": ["tiny"] * 5 + ["odd-labels"] * 60,
                      "event_time": pa.array([START] * 65, pa.timestamp("us", tz="UTC")),
                      "basket": [1.0] * 65, "visits": [1.0] * 65, "region": ["north"] * 65,
                      "promo": pa.nulls(65, pa.float64()), "y": [0.0] * 5 + [0.0, 1.0, 7.0] * 20})
    pq.write_table(pa.concat_tables([pq.read_table(path), extra]), path)
    reg = _registry(tmp_path)
    report: TrainingReport = job_mod.run_training(
        None, reg.root, spec=spec_for(path, "binary", holdout={"fraction": 0.25}),
        settings=SETTINGS)
    assert {f.tenant_id: f.reason for f in report.failures} == {
        "tiny": "too_few_rows", "odd-labels": "invalid_label"}
    mv = Registry.open(reg.root).history("store-0")[0]
    assert mv.metrics["n_holdout"] == 40 and mv.metrics["n_train"] == 120  # 25% by time


def test_objective_change_makes_production_unscorable(tmp_path: Path,
                                                      no_ray: list[BucketSpec]) -> None:
    path = stores(tmp_path, "binary", n_stores=2)
    reg = _registry(tmp_path)
    job_mod.run_training(None, reg.root, spec=spec_for(path, "binary"), settings=SETTINGS,
                         date="2024-05-03")
    report = job_mod.run_training(None, reg.root, spec=spec_for(path, "regression"),
                                  settings=SETTINGS)
    assert report.promoted == 2
    reasons = reg.index.query("aliases", "run_id = 'train-2024-05-04'",
                              columns="reason").column("reason").to_pylist()
    assert all("production is binary:logistic, this run trains reg:squarederror" in r
               for r in reasons)
