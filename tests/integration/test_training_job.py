"""The training job on a local Ray: degenerate tenants, idempotence, reproducible artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from registry import Registry, shard_of
from training import FEATURE_NAMES, FeatureTable, TrainingSettings, run_training
from training.craft import rule_rows
from training.errors import DataNotFound
from training.generate import GeneratorConfig, generate
from training.table import write_rows

pytestmark = pytest.mark.usefixtures("ray_session")

FAST = TrainingSettings(n_estimators=10, max_depth=3, progress=False)
DAYS = ("2024-01-01", "2024-01-02", "2024-01-03")


def _registry(tmp_path: Path) -> str:
    """A new 4-shard registry (training never creates one), its root."""
    root = tmp_path / "reg"
    if not root.exists():
        Registry.create(str(root), num_shards=4)
    return str(root)


@pytest.fixture()
def crafted(tmp_path: Path) -> str:
    """Two good tenants and one of every degenerate type, over three days, 4 shards."""
    rows = []
    for k, day in enumerate(DAYS):
        rows.append(rule_rows("good-a", day, 80, seed=k, num_shards=4, noise=0.1))
        rows.append(rule_rows("good-b", day, 70, seed=10 + k, num_shards=4, feature=5))
        rows.append(rule_rows("tiny", day, 6, seed=20 + k, num_shards=4))
        rows.append(rule_rows("never-fraud", day, 60, seed=30 + k, num_shards=4,
                              constant_label=0))
        rows.append(rule_rows("bad id!", day, 60, seed=40 + k, num_shards=4))  # stage fails
        if day != DAYS[-1]:
            rows.append(rule_rows("quiet-today", day, 60, seed=50 + k, num_shards=4))
    path = str(tmp_path / "features")
    write_rows(path, pa.concat_tables(rows), num_shards=4)
    return path


def test_degenerate_tenants_are_isolated_and_reported(crafted: str, tmp_path: Path) -> None:
    report = run_training(crafted, _registry(tmp_path), settings=FAST)
    assert report.date == DAYS[-1] and report.run_id == f"train-{DAYS[-1]}"
    assert (report.trained, report.skipped, report.failed) == (2, 3, 1)
    assert (report.published, report.promoted, report.shadowed) == (2, 2, 0)
    reasons = {f.tenant_id: (f.status, f.reason) for f in report.failures}
    assert reasons == {"tiny": ("skipped", "too_few_rows"),
                       "never-fraud": ("skipped", "one_class"),
                       "quiet-today": ("skipped", "holdout_unusable"),
                       "bad id!": ("failed", "error")}
    assert "InvalidTenantId" in next(f.detail for f in report.failures if f.status == "failed")
    doc = report.to_json()
    for key in ("run_id", "date", "trained", "skipped", "failed", "published", "promoted",
                "shadowed", "models_per_s", "elapsed_s"):
        assert key in doc
    assert doc["reasons"] == {"error": 1, "holdout_unusable": 1, "one_class": 1,
                              "too_few_rows": 1}
    reg = Registry.open(_registry(tmp_path))
    assert sorted(reg.production_versions()) == ["good-a", "good-b"]


def test_rerun_of_a_run_id_is_a_noop(crafted: str, tmp_path: Path) -> None:
    root = _registry(tmp_path)
    first = run_training(crafted, root, run_id="nightly-1", settings=FAST)
    again = run_training(crafted, root, run_id="nightly-1", settings=FAST)
    assert first.published == 2 and not first.already_published
    assert again.already_published and (again.trained, again.published) == (0, 0)
    reg = Registry.open(root)
    assert [mv.version for mv in reg.history("good-a")] == [1]
    artifacts = list(Path(root).rglob("model.ubj"))
    assert len(artifacts) == 2  # the re-run staged nothing either


def test_published_artifact_reproduces_its_holdout_metric(tmp_path: Path) -> None:
    data = str(tmp_path / "gen")
    generate(data, GeneratorConfig(tenants=12, days=4, seed=3, num_shards=4, mean_rows=600))
    root = _registry(tmp_path)
    report = run_training(data, root, settings=FAST.with_overrides(window_days=4))
    assert report.trained >= 5
    reg = Registry.open(root)
    table = FeatureTable(data)
    checked = 0
    for tenant_id, mv in reg.production_versions().items():
        holdout = table.read_shard(shard_of(tenant_id, 4), [report.date]).to_pandas()
        holdout = holdout[holdout.tenant_id == tenant_id]
        booster = reg.load_booster(mv)
        assert tuple(mv.feature_names) == FEATURE_NAMES == tuple(booster.feature_names)
        p = booster.inplace_predict(holdout[list(mv.feature_names)].to_numpy(np.float64))
        assert roc_auc_score(holdout.label, p) == pytest.approx(mv.metrics["auc"], abs=1e-9)
        assert len(holdout) == mv.metrics["n_holdout"]
        checked += 1
    assert checked == report.trained


def test_unknown_date_is_a_user_error(crafted: str, tmp_path: Path) -> None:
    with pytest.raises(DataNotFound):
        run_training(crafted, _registry(tmp_path), date="2023-12-31", settings=FAST)
