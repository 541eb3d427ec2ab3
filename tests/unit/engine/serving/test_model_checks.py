"""Load-time checks of a model: feature order against the index, and the compiled forest's
self-check against XGBoost (fallback to the Booster, counted)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

import engine.serving.model as model_mod
from engine.forest import FOREST_VERSION, CompiledForest, compile_forest, probe_rows
from engine.forest.saved import SAVED_NAME, load_saved_forest
from engine.serving.api import create_app
from engine.serving.host import ModelHostState
from engine.settings import ServeSettings
from registry import AliasMove, ModelVersion, NewVersion, Registry
from registry.errors import ModelLoadError
from tests.conftest import count_self_checks, publish_models, train_tiny

from .test_api import call
from .test_host import NAMES, body, tiny


def _trained_on(names: list[str], seed: int = 3) -> bytes:
    return train_tiny(seed, features=names, rows=300, rounds=8, missing=0.1)


def _publish(reg: Registry, tenant: str, data: bytes, names: tuple[str, ...]) -> None:
    publish_models(reg, {tenant: data}, f"run-{tenant}", features=names, metrics={"auc": 0.9})


def prod(reg: Registry, tenant: str) -> ModelVersion:
    mv = reg.get(tenant).production
    assert mv is not None
    return mv


@pytest.fixture()
def reg(tmp_path: Path) -> Registry:
    reg = Registry.create(str(tmp_path / "reg"), 2)
    _publish(reg, "acme", tiny(1), NAMES)
    # Trained on (age, amount, velocity), indexed as (amount, age, velocity): same names,
    # other order. Served by position, every prediction would be wrong.
    _publish(reg, "swapped", _trained_on(["age", "amount", "velocity"]), NAMES)
    _publish(reg, "renamed", _trained_on(["amount", "age", "speed"]), NAMES)
    return reg


def test_feature_order_mismatch_refuses_the_model(reg: Registry) -> None:
    with pytest.raises(ModelLoadError) as err:
        model_mod.load_model(reg, prod(reg, "swapped"))
    message = str(err.value)
    assert "order (amount, age, velocity)" in message
    assert "(age, amount, velocity)" in message
    with pytest.raises(ModelLoadError, match=r"\(amount, age, speed\)"):
        model_mod.load_model(reg, prod(reg, "renamed"))
    assert model_mod.load_model(reg, prod(reg, "acme")).feature_names == NAMES


def test_feature_order_mismatch_answers_503_and_counts_a_load_failure(reg: Registry) -> None:
    state = ModelHostState(ServeSettings(registry=reg.root), reg)
    app = create_app(state)
    for _ in range(2):  # the failure is remembered: one load, one count
        resp = call(app, "POST", "/v1/tenants/swapped/predict", json={"instances": [[1, 2, 3]]})
        assert resp.status_code == 503
        assert resp.json()["error"] == "ModelLoadError"
        assert "(amount, age, velocity)" in resp.json()["detail"]
        assert "(age, amount, velocity)" in resp.json()["detail"]
    assert call(app, "POST", "/v1/tenants/acme/predict",
                json={"instances": [[1, 2, 3]]}).status_code == 200
    assert state.metrics.model_load_failures._value.get() == 1


def test_unnamed_artifact_is_checked_by_count_only(tmp_path: Path) -> None:
    plain = train_tiny(0, features=3, rows=100, rounds=3, depth=2)
    reg = Registry.create(str(tmp_path / "reg"), 2)
    _publish(reg, "plain", plain, NAMES)
    assert model_mod.load_model(reg, prod(reg, "plain")).feature_names == NAMES


def test_probe_rows_hit_thresholds_both_sides_and_missing() -> None:
    forest = compile_forest(_trained_on(["a", "b", "c", "d"]))
    x = probe_rows(forest)
    assert x.shape == (8, 4) and x.dtype == np.float32
    assert np.array_equal(probe_rows(forest), x, equal_nan=True)  # deterministic
    assert np.isnan(x[-1]).all() and np.isnan(x[:-1]).any() and not np.isnan(x[:-1]).all()
    thresholds = set(forest.threshold[~np.isnan(forest.threshold)].tolist())
    assert any(float(v) in thresholds for v in x[~np.isnan(x)])


def _broken_values(forest: CompiledForest) -> CompiledForest:
    return dataclasses.replace(forest, value=forest.value + np.float32(0.01))


def _broken_missing(forest: CompiledForest) -> CompiledForest:
    """Every split sends a missing value the wrong way (only NaN rows can tell)."""
    nf = forest.n_features
    flipped = np.where(np.isnan(forest.threshold), forest.feature,
                       (forest.feature + nf) % (2 * nf)).astype(np.int32)
    return dataclasses.replace(forest, feature=flipped)


@pytest.mark.parametrize("breakage", [_broken_values, _broken_missing])
def test_broken_compile_falls_back_to_xgboost_and_is_counted(
        reg: Registry, monkeypatch: pytest.MonkeyPatch, breakage: object) -> None:
    real = model_mod.compile_forest
    monkeypatch.setattr(model_mod, "compile_forest",
                        lambda data: breakage(real(data)))  # type: ignore[operator]  # a test double
    rows = np.random.default_rng(5).normal(size=(40, 3))
    rows[::4, 0] = np.nan
    rows[1::4, 1] = np.nan
    offline = xgb.Booster()
    offline.load_model(bytearray(reg.read_artifact(prod(reg, "acme"))))
    expected = offline.inplace_predict(rows.astype(np.float32))

    async def main() -> list[float] | list[list[float]]:
        state = ModelHostState(ServeSettings(registry=reg.root), reg)
        payload = [[None if np.isnan(v) else float(v) for v in r] for r in rows]
        pred = await state.predict("acme", json.dumps({"instances": payload}).encode())
        model, _ = await state.model_for(prod(reg, "acme"))
        assert model.engine == "xgboost" and model.selfcheck_fallback
        assert state.metrics.model_selfcheck_fallbacks._value.get() == 1
        assert state.metrics.model_load_failures._value.get() == 0
        await state.predict("acme", body([[1, 2, 3]]))  # cached: not checked or counted again
        assert state.metrics.model_selfcheck_fallbacks._value.get() == 1
        assert b"tenantry_model_selfcheck_fallbacks_total 1.0" in state.metrics.render()
        return pred.predictions

    np.testing.assert_allclose(asyncio.run(main()), expected, atol=1e-6)


def test_a_correct_forest_passes_its_self_check(reg: Registry) -> None:
    async def main() -> None:
        state = ModelHostState(ServeSettings(registry=reg.root), reg)
        await state.predict("acme", body([[1, 2, 3]]))
        model, _ = await state.model_for(prod(reg, "acme"))
        assert model.engine == "forest" and not model.selfcheck_fallback
        assert state.metrics.model_selfcheck_fallbacks._value.get() == 0

    asyncio.run(main())


@pytest.mark.parametrize("params", [
    {}, {"objective": "binary:logitraw"}, {"objective": "reg:squarederror"},
    {"max_depth": 8, "missing_share": 0.4}, {"features": 30, "dead_columns": 3},
])
def test_self_check_passes_on_correct_forests(params: dict[str, object]) -> None:
    from ..forest.conftest import train

    params = dict(params)
    missing = float(params.pop("missing_share", 0.1))  # type: ignore[arg-type]  # test param
    for seed in range(4):
        booster, _ = train(seed, missing=missing, **params)  # type: ignore[arg-type]
        forest = compile_forest(bytes(booster.save_raw("ubj")))
        assert model_mod._selfcheck(forest, booster) is None


def test_a_checked_artifact_is_not_checked_again(reg: Registry,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []
    real = model_mod.booster_from_bytes

    def counted(data: bytes, label: str) -> object:
        loads.append(label)
        return real(data, label)

    monkeypatch.setattr(model_mod, "booster_from_bytes", counted)
    memo = model_mod.SelfCheckMemo(limit=1)
    mv = prod(reg, "acme")
    assert model_mod.load_model(reg, mv, memo).engine == "forest"
    assert model_mod.load_model(reg, mv, memo).engine == "forest"
    assert len(loads) == 1 and mv.sha256 in memo
    with pytest.raises(ModelLoadError):  # the order check does not depend on the memo
        model_mod.load_model(reg, prod(reg, "swapped"), memo)
    memo.add("other")  # bounded: the oldest is forgotten
    assert mv.sha256 not in memo and "other" in memo


# -- the self-check done once, at publish time ----------------------------------------------


def _checked_publish(reg: Registry, tenant: str, data: bytes,
                     forest_check: str | None) -> ModelVersion:
    publish_models(reg, {tenant: data}, f"run-{tenant}", features=NAMES, metrics={"auc": 0.9},
                   forest_check=forest_check)
    return prod(reg, tenant)


def test_publish_check_passes_a_correct_forest_and_records_the_compiler_version() -> None:
    data = tiny(1)
    booster = xgb.Booster()
    booster.load_model(bytearray(data))
    result = model_mod.publish_check(data, booster)
    assert result.columns == {"forest_check": FOREST_VERSION}
    saved = load_saved_forest(result.files[SAVED_NAME], hashlib.sha256(data).hexdigest())
    x = np.random.default_rng(3).normal(size=(16, 3)).astype(np.float32)
    np.testing.assert_array_equal(saved.predict(x), compile_forest(data).predict(x))


def test_a_version_checked_at_publish_loads_without_the_self_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = Registry.create(str(tmp_path / "reg"), 2)
    mv = _checked_publish(reg, "acme", tiny(1), FOREST_VERSION)
    assert mv.forest_check == FOREST_VERSION  # read back from the index row

    def never(forest: CompiledForest, booster: object) -> float | None:
        raise AssertionError("self-checked a version checked at publish")

    def no_booster(data: bytes, label: str) -> object:
        raise AssertionError("loaded a Booster for a version checked at publish")

    monkeypatch.setattr(model_mod, "_selfcheck", never)
    monkeypatch.setattr(model_mod, "booster_from_bytes", no_booster)
    model = model_mod.load_model(reg, mv)
    assert model.engine == "forest" and not model.selfcheck_fallback
    offline = xgb.Booster()
    offline.load_model(bytearray(tiny(1)))
    x = np.random.default_rng(2).normal(size=(20, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), offline.inplace_predict(x), atol=1e-6)
    with pytest.raises(ModelLoadError):  # the order check does not depend on the record
        model_mod.load_model(reg, _checked_publish(
            reg, "swapped", _trained_on(["age", "amount", "velocity"]), FOREST_VERSION))


@pytest.mark.parametrize("record", [None, "0", FOREST_VERSION + "-older"])
def test_a_version_without_this_compilers_record_is_self_checked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: str | None) -> None:
    reg = Registry.create(str(tmp_path / "reg"), 2)
    mv = _checked_publish(reg, "acme", tiny(1), record)
    assert mv.forest_check == record
    calls = count_self_checks(monkeypatch)
    assert model_mod.load_model(reg, mv).engine == "forest"
    assert calls == ["check"]


def test_a_broken_compile_at_publish_records_null_and_serving_checks_and_falls_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = model_mod.compile_forest
    monkeypatch.setattr(model_mod, "compile_forest", lambda data: _broken_values(real(data)))
    data = tiny(1)
    booster = xgb.Booster()
    booster.load_model(bytearray(data))
    result = model_mod.publish_check(data, booster)
    record = result.columns["forest_check"]
    assert record is None and result.files == {}  # nothing saved for a forest that differs
    reg = Registry.create(str(tmp_path / "reg"), 2)
    mv = _checked_publish(reg, "acme", data, record)
    calls = count_self_checks(monkeypatch)
    model = model_mod.load_model(reg, mv)
    assert calls == ["check"]
    assert model.engine == "xgboost" and model.selfcheck_fallback


def test_publish_check_records_null_for_models_the_forest_does_not_handle() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 3))
    # multi-class (train_tiny trains one-output models only)
    multi = xgb.train({"objective": "multi:softprob", "num_class": 3, "nthread": 1},
                      xgb.DMatrix(x, rng.integers(0, 3, 90)), 2)
    assert model_mod.publish_check(bytes(multi.save_raw("ubj")), multi).columns == {
        "forest_check": None}


def test_rows_of_an_index_made_before_the_column_read_unchecked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from registry.index import TABLES
    from registry.registry import _model_rows

    reg = Registry.create(str(tmp_path / "reg"), 2)
    legacy = pa.schema([f for f in TABLES["models"] if f.name != "forest_check"])
    uri = reg.index.uri("models")
    shutil.rmtree(uri)  # the models table as registries made it before the column
    DeltaTable.create(uri, legacy, partition_by=["shard"],
                      configuration={"delta.enableChangeDataFeed": "true"})
    reg = Registry.open(reg.root)
    staged = reg.stage_artifact("old", tiny(1), "run-old")
    rows = _model_rows([NewVersion(staged, NAMES, {"auc": 0.9})], "run-old",
                       [reg.artifact_path(staged)])
    write_deltalake(uri, rows.drop_columns(["forest_check"]).cast(legacy), mode="append")
    reg.move_aliases([AliasMove("old", "production", staged.version)])
    assert prod(Registry.open(reg.root), "old").forest_check is None  # no such column yet
    new = _checked_publish(reg, "new", tiny(2), FOREST_VERSION)  # the table gains the column
    assert "forest_check" in DeltaTable(uri).schema().to_arrow().names
    old = prod(Registry.open(reg.root), "old")
    assert (old.forest_check, new.forest_check) == (None, FOREST_VERSION)
    calls = count_self_checks(monkeypatch)
    assert model_mod.load_model(reg, old).engine == "forest" and calls == ["check"]
    assert model_mod.load_model(reg, new).engine == "forest" and calls == ["check"]
