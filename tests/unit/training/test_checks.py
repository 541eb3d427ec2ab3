"""Publish-time artifact checks: the registry of checks, and the training job recording
serving's forest check in each version's index row (buckets in-process, no Ray)."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import engine.serving.model as model_mod
import training.checks as checks_mod
import training.job as job_mod
from engine.cli import register_checks
from engine.forest import FOREST_VERSION, CompiledForest
from engine.forest.saved import SAVED_NAME
from registry import ModelVersion, Registry
from tests.conftest import count_self_checks
from training.bucket import BucketResult, BucketSpec, JobContext, train_bucket
from training.generate import GeneratorConfig, generate
from training.model import ModelSpec, train_tenant
from training.settings import TrainingSettings

SETTINGS = TrainingSettings(n_estimators=4, max_depth=3, window_days=3, progress=False)


@pytest.fixture()
def registered(monkeypatch: pytest.MonkeyPatch) -> list[checks_mod.ArtifactCheck]:
    """An empty check registry for this test (start-up registration elsewhere undone)."""
    fresh: list[checks_mod.ArtifactCheck] = []
    monkeypatch.setattr(checks_mod, "_REGISTERED", fresh)
    return fresh


@pytest.fixture()
def contexts(monkeypatch: pytest.MonkeyPatch) -> list[JobContext]:
    """Run buckets in this process, each on a pickled copy of the job's map function (as
    Ray Data ships it); returns the contexts the buckets ran with."""
    seen: list[JobContext] = []

    def run_here(ctx: JobContext, buckets: list[BucketSpec],
                 resources: dict[str, float]) -> Iterator[BucketResult]:
        shipped = pickle.loads(pickle.dumps(job_mod._BucketFn(ctx))).ctx
        seen.append(shipped)
        for bucket in buckets:
            yield train_bucket(shipped, bucket)

    monkeypatch.setattr(job_mod, "ensure_ray", lambda *args, **kwargs: None)
    monkeypatch.setattr(job_mod, "_run_buckets", run_here)
    return seen


def _train(tmp_path: Path) -> list[ModelVersion]:
    """Every version one in-process training run published."""
    data = str(tmp_path / "features")
    generate(data, GeneratorConfig(tenants=6, days=3, seed=3, num_shards=2, mean_rows=300,
                                   size_sigma=0.2))
    reg = Registry.create(str(tmp_path / "registry"), num_shards=2)
    report = job_mod.run_training(data, reg.root, run_id="r1", settings=SETTINGS)
    assert report.published > 0
    versions = list(Registry.open(reg.root).snapshot().all_versions())
    assert len(versions) == report.published
    return versions


def test_registering_is_idempotent_and_ordered(registered: list[Any]) -> None:
    def a(data: bytes, booster: Any) -> dict[str, str | None]:
        return {"forest_check": "a"}

    def b(data: bytes, booster: Any) -> dict[str, str | None]:
        return {"forest_check": "b"}

    for fn in (a, b, a):
        checks_mod.register_artifact_check(fn)
    assert checks_mod.registered_checks() == (a, b)
    assert checks_mod.run_artifact_checks(checks_mod.registered_checks(), b"", None).columns == {
        "forest_check": "b"}


def test_a_failing_check_and_unknown_columns_record_nothing() -> None:
    def boom(data: bytes, booster: Any) -> dict[str, str | None]:
        raise RuntimeError("compiler crashed")

    def stray(data: bytes, booster: Any) -> dict[str, str | None]:
        return {"not_a_column": "x"}

    assert checks_mod.run_artifact_checks([boom, stray], b"x", None) == checks_mod.CheckResult()


def test_files_a_check_writes_are_kept_and_misnamed_ones_dropped() -> None:
    def saves(data: bytes, booster: Any) -> checks_mod.CheckResult:
        return checks_mod.CheckResult({"forest_check": "1"},
                                      {"forest-v1.arrow": b"compiled", "model.ubj": b"evil",
                                       "../escape.arrow": b"evil", "x.arrow": "not bytes"})

    got = checks_mod.run_artifact_checks([saves], b"x", None)
    assert got.columns == {"forest_check": "1"} and got.files == {"forest-v1.arrow": b"compiled"}


def test_train_tenant_runs_the_checks_on_its_bytes_and_booster() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] > 0).astype(float)
    seen: list[tuple[bytes, Any]] = []

    def spy(data: bytes, booster: Any) -> dict[str, str | None]:
        seen.append((data, booster))
        return model_mod.publish_check(data, booster)

    model = train_tenant("t1", ("a", "b", "c"), x[:150], y[:150], x[150:], y[150:],
                         ModelSpec(n_estimators=4, max_depth=3), (spy,))
    assert model.checks == {"forest_check": FOREST_VERSION}
    assert set(model.files) == {SAVED_NAME}  # the compiled forest, staged with the artifact
    assert seen[0][0] == model.model_bytes and hasattr(seen[0][1], "inplace_predict")
    plain = train_tenant("t1", ("a", "b", "c"), x[:150], y[:150], x[150:], y[150:],
                         ModelSpec(n_estimators=4, max_depth=3))
    assert plain.checks == {} and plain.model_bytes == model.model_bytes



def test_the_job_records_the_forest_check_of_every_version(
        tmp_path: Path, registered: list[Any], contexts: list[JobContext],
        monkeypatch: pytest.MonkeyPatch) -> None:
    register_checks()  # what `tenantry` does at start-up
    versions = _train(tmp_path)
    assert contexts[0].checks == (model_mod.publish_check,)  # reached the (pickled) tasks
    assert {mv.forest_check for mv in versions} == {FOREST_VERSION}

    def never(forest: CompiledForest, booster: Any) -> float | None:
        raise AssertionError("a version checked at publish was self-checked at load")

    def no_compile(data: bytes) -> CompiledForest:
        raise AssertionError("compiled an artifact whose forest was saved at publish")

    monkeypatch.setattr(model_mod, "_selfcheck", never)
    monkeypatch.setattr(model_mod, "compile_forest", no_compile)
    reg = Registry.open(str(tmp_path / "registry"))
    for mv in versions:  # each compiled forest was staged beside its artifact, and loads
        assert reg.read_companion(mv, SAVED_NAME) is not None
        assert model_mod.load_model(reg, mv).engine == "forest"


def test_without_a_registered_check_the_job_records_null(
        tmp_path: Path, registered: list[Any], contexts: list[JobContext]) -> None:
    versions = _train(tmp_path)
    assert contexts[0].checks == ()
    assert {mv.forest_check for mv in versions} == {None}


def test_a_broken_compile_at_publish_records_null_and_serving_falls_back(
        tmp_path: Path, registered: list[Any], contexts: list[JobContext],
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = model_mod.compile_forest

    def broken(data: bytes) -> CompiledForest:
        forest = real(data)
        return dataclasses.replace(forest, value=forest.value + np.float32(0.01))

    monkeypatch.setattr(model_mod, "compile_forest", broken)
    register_checks()
    versions = _train(tmp_path)
    assert {mv.forest_check for mv in versions} == {None}
    reg = Registry.open(str(tmp_path / "registry"))
    checked = count_self_checks(monkeypatch)
    for mv in versions:  # still broken at serving: the load's own check catches it
        model = model_mod.load_model(reg, mv)
        assert model.engine == "xgboost" and model.selfcheck_fallback
    assert len(checked) == len(versions)
