"""Bring your own data, on a local Ray: specs, other objectives, categorical features, any
table shape, and the README's path from a CSV to published models."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake

from registry import Registry, shard_of
from training import TrainingSettings, load_spec, run_training

pytestmark = pytest.mark.usefixtures("ray_session")

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = TrainingSettings(progress=False, scan_buckets=2)
START = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)


def _tenantry(*args: str) -> subprocess.CompletedProcess[str]:
    import ray

    env = {**os.environ, "TENANTRY_RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, text=True,
                          capture_output=True, check=False, env=env, timeout=600)


def _events(objective: str, shops: int = 5, per_day: int = 50, days: int = 4,
            seed: int = 0) -> pa.Table:
    """Shop events with other column names: shop, at (timestamp), spend, items, channel
    (text: categorical), outcome; no shard column."""
    rng = np.random.default_rng(seed)
    parts = []
    for s in range(shops):
        n = per_day * days
        at = START + dt.timedelta(seconds=1) * np.sort(rng.integers(0, days * 86400, n))
        spend, items = rng.gamma(2.0, 20.0, n), rng.poisson(4, n).astype(float)
        channel = rng.choice(["web", "app", "store"], n)
        signal = (spend - 40) / 25 + (channel == "app") * 1.2 - 0.1 * items
        if objective == "regression":
            outcome = 5 * signal + rng.normal(0, 0.5, n)
        else:
            outcome = np.digitize(signal + rng.normal(0, 0.3, n), [-0.4, 0.6]).astype(np.int64)
        parts.append(pa.table({"shop": [f"shop-{s}"] * n,
                               "at": pa.array(at, pa.timestamp("us", tz="UTC")),
                               "spend": spend, "items": items, "channel": channel,
                               "outcome": outcome}))
    return pa.concat_tables(parts)


def _spec(tmp_path: Path, table: str, objective: str, extra: str = "") -> str:
    path = tmp_path / f"{objective}.yaml"
    path.write_text(f"""
table: {table}
tenant_column: shop
time_column: at
label_column: outcome
features: {{include: ["*"]}}
objective: {objective}
window_days: 4
xgboost: {{n_estimators: 8, max_depth: 3}}
min_rows: {{train: 40, holdout: 10}}
{extra}
""")
    return str(path)


def test_regression_on_a_parquet_file_without_shards(tmp_path: Path) -> None:
    data = str(tmp_path / "events.parquet")
    pq.write_table(_events("regression"), data)
    root = str(tmp_path / "reg")
    Registry.create(root, num_shards=4)
    spec = load_spec(_spec(tmp_path, data, "regression", "gate: {tolerance: 0.2}"))
    first = run_training(None, root, spec=spec, settings=SETTINGS, date="2024-06-03")
    second = run_training(None, root, spec=spec, settings=SETTINGS)
    assert first.published == second.published == 5 and second.failed == 0
    doc = second.to_json()
    assert (doc["layout"], doc["gate_metric"], doc["categorical"]) == ("scan", "rmse",
                                                                       ["channel"])
    reg = Registry.open(root)
    for shop, mv in reg.production_versions().items():
        assert mv.shard == shard_of(shop, 4)
        assert mv.feature_names == ("spend", "items", "channel")
        assert {"rmse", "mae"} <= set(mv.metrics) and "auc" not in mv.metrics
    aliases = reg.index.query("aliases", "run_id = 'train-2024-06-04'").to_pylist()
    assert len(aliases) == 5 and all(a["reason"].startswith("holdout rmse ") for a in aliases)
    latest = reg.history("shop-0")[0]
    assert latest.version == 2 and "production_rmse" in latest.metrics
    models = reg.index.query("models", "version = 2", "objective, feature_types")
    assert set(models.column("objective").to_pylist()) == {"reg:squarederror"}
    assert models.column("feature_types").to_pylist()[0] == ["float", "float", "categorical"]


def test_multiclass_on_a_delta_table_not_laid_out_by_shard(tmp_path: Path) -> None:
    data = str(tmp_path / "events")
    write_deltalake(data, _events("multiclass", seed=1))  # no partitions at all
    root = str(tmp_path / "reg")
    Registry.create(root, num_shards=2)
    report = run_training(None, root, spec=load_spec(_spec(tmp_path, data, "multiclass")),
                          settings=SETTINGS)
    doc = report.to_json()
    assert (doc["xgb_objective"], doc["num_class"], doc["gate_metric"]) == \
        ("multi:softprob", 3, "mlogloss")
    assert report.published == 5
    reg = Registry.open(root)
    mv = reg.production_versions()["shop-3"]
    assert {"mlogloss", "merror"} <= set(mv.metrics)
    booster = reg.load_booster(mv)
    frame = pq.read_table(pq.ParquetDataset(data).files[0]).to_pandas().head(4)
    probs = booster.inplace_predict(frame[list(mv.feature_names)].astype({"channel": "category"}))
    assert probs.shape == (4, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    row = reg.index.query("models", "tenant_id = 'shop-3'", "objective, num_class").to_pylist()
    assert row == [{"objective": "multi:softprob", "num_class": 3}]


def test_a_spec_with_mistakes_is_refused_one_line_each(tmp_path: Path) -> None:
    data = str(tmp_path / "events.parquet")
    pq.write_table(_events("regression", shops=1, per_day=5), data)
    Registry.create(str(tmp_path / "reg"), num_shards=2)
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"table: {data}\ntenant_column: shop\ntime_column: at\nlabel_column: outcome\n"
                   "features: [spend, basket]\n")
    run = _tenantry("train", "--spec", str(bad), "--registry", str(tmp_path / "reg"))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.splitlines()[1:] == [
        ("  features[1]: column 'basket' not in the table (it has: shop, at, spend, items, "
        "channel, outcome)")]
    bad.write_text("table: t\nobjective: ranking\nmin_rows: {train: -3}\n"
                   "features: {columns: [a], include: ['b*']}\n")
    run = _tenantry("train", "--spec", str(bad), "--registry", str(tmp_path / "reg"))
    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        f"tenantry: error: training spec {bad} has 3 problems:",
        "  features: give either a list of columns or include/exclude patterns, not both",
        "  objective: input should be 'binary', 'regression' or 'multiclass' (got 'ranking')",
        "  min_rows.train: input should be greater than or equal to 2 (got -3)"]


def _churn_csv(path: Path) -> None:
    """A small public-looking customer churn export: one row per account snapshot."""
    rng = np.random.default_rng(7)
    lines = ["account,ts,tenure_months,plan,monthly_charges,churned"]
    for account in ("acme-co", "globex", "initech", "umbrella.eu"):
        for day in range(5):
            for _ in range(45):
                tenure, plan = int(rng.integers(1, 72)), str(rng.choice(["basic", "pro", "team"]))
                charges = float(rng.normal(60, 20))
                logit = -0.06 * tenure + 1.4 * (plan == "basic") + 0.03 * (charges - 60)
                churned = int(rng.uniform() < 1 / (1 + np.exp(-logit)))
                ts = START + dt.timedelta(days=day, minutes=int(rng.integers(0, 1440)))
                lines.append(f"{account},{ts.isoformat()},{tenure},{plan},{charges:.2f},"
                             f"{churned}")
    lines.append("not an id,2024-06-02T10:00:00+00:00,3,pro,20.00,1")
    path.write_text("\n".join(lines) + "\n")


def test_readme_path_from_a_csv_to_published_models(tmp_path: Path) -> None:
    csv, reg = tmp_path / "churn.csv", str(tmp_path / "registry")
    _churn_csv(csv)
    spec = tmp_path / "churn.yaml"
    spec.write_text("""\
table: churn-features            # relative to this file
tenant_column: account
time_column: ts
label_column: churned
features: [tenure_months, plan, monthly_charges]
objective: binary
window_days: 5
xgboost: {n_estimators: 10, max_depth: 3}
min_rows: {train: 50, holdout: 10}
gate: {metric: auc, tolerance: 0.02}
""")
    init = _tenantry("registry", "init", "--registry", reg, "--shards", "4")
    assert init.returncode == 0, init.stderr
    imp = _tenantry("data", "import", "--from", str(csv), "--spec", str(spec), "--registry",
                    reg, "--json")
    assert imp.returncode == 0, imp.stderr
    imported = json.loads(imp.stdout)
    assert (imported["rows_imported"], imported["rows_rejected"]) == (900, 1)
    assert imported["rejected_by_reason"] == {"invalid_tenant_id": 1}
    train = _tenantry("train", "--spec", str(spec), "--registry", reg, "--json")
    assert train.returncode == 0, train.stderr
    report = json.loads(train.stdout)
    assert (report["trained"], report["published"], report["failed"]) == (4, 4, 0)
    assert (report["layout"], report["date"], report["categorical"]) == \
        ("sharded", "2024-06-05", ["plan"])
    listed = _tenantry("registry", "list", "--registry", reg, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["tenant_id"] for r in rows] == ["acme-co", "globex", "initech", "umbrella.eu"]
    assert all(r["production_version"] == 1 for r in rows)
    again = _tenantry("data", "import", "--from", str(csv), "--spec", str(spec), "--registry",
                      reg)
    assert again.returncode == 0 and "already imported" in again.stdout
