"""The compiled forest saved at publish: equal to compiling, refused when it does not fit."""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import xgboost as xgb

import engine.forest.saved as saved_mod
import engine.serving.model as model_mod
from engine.forest import FOREST_VERSION, CompiledForest, compile_forest
from engine.forest.saved import SAVED_NAME, SavedForestInvalid, dump_forest, load_saved_forest
from registry import ModelVersion, Registry
from registry.errors import ChecksumMismatch, ValidationError
from tests.conftest import publish_models, train_tiny

FIELDS = ("roots", "feature", "threshold", "left", "value")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("shape", [{}, {"features": 7, "rounds": 12, "depth": 4}])
def test_a_saved_forest_loads_equal_to_compiling_its_artifact(shape: dict[str, int]) -> None:
    data = train_tiny(3, **shape)
    compiled = compile_forest(data)
    saved = load_saved_forest(dump_forest(compiled, _sha(data)), _sha(data))
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(saved, name), getattr(compiled, name))
        assert getattr(saved, name).dtype == getattr(compiled, name).dtype
    for name in ("n_features", "feature_names", "nbytes", "sigmoid", "base_margin", "depth",
                 "names_stored", "objective"):
        assert getattr(saved, name) == getattr(compiled, name), name
    x = np.random.default_rng(0).normal(size=(50, compiled.n_features)).astype(np.float32)
    x[::7, 0] = np.nan
    booster = xgb.Booster()
    booster.load_model(bytearray(data))
    np.testing.assert_array_equal(saved.predict(x), compiled.predict(x))
    np.testing.assert_allclose(saved.predict(x), booster.inplace_predict(x), atol=1e-6)


def _damaged(data: bytes, case: str, monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, str]:
    """A saved forest of ``data`` spoiled as ``case`` says, and the sha256 to load it with."""
    forest, sha = compile_forest(data), _sha(data)
    good = dump_forest(forest, sha)
    if case == "node bytes":
        at = good.index(forest.value.tobytes()) + forest.value.nbytes // 2
        return good[:at] + bytes([good[at] ^ 0x40]) + good[at + 1:], sha
    if case == "truncated":
        return good[: len(good) * 2 // 3], sha
    if case == "other artifact":
        return good, "0" * 64
    if case == "other compiler":
        monkeypatch.setattr(saved_mod, "FOREST_VERSION", FOREST_VERSION + "-next")
        return dump_forest(forest, sha), sha
    if case == "other columns":
        batch = pa.record_batch({"feature": forest.feature})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        return sink.getvalue().to_pybytes(), sha
    if case == "npy":
        out = io.BytesIO()
        np.save(out, forest.left)
        return out.getvalue(), sha
    return {"garbage": b"ARROW1 junk", "empty": b""}[case], sha


@pytest.mark.parametrize("case", ["node bytes", "truncated", "other artifact", "other compiler",
                                  "other columns", "npy", "garbage", "empty"])
def test_a_damaged_or_foreign_saved_forest_is_refused(
        case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    blob, sha = _damaged(train_tiny(1), case, monkeypatch)
    monkeypatch.undo()  # load with this compiler's version
    with pytest.raises(SavedForestInvalid):
        load_saved_forest(blob, sha)


def _publish(reg: Registry, tenant: str, data: bytes, saved: bytes | None) -> ModelVersion:
    publish_models(reg, {tenant: data}, f"run-{tenant}", forest_check=FOREST_VERSION,
                   features=compile_forest(data).feature_names,
                   files={SAVED_NAME: saved} if saved is not None else None)
    mv = reg.get(tenant).production
    assert mv is not None
    return mv


def _no_compile(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = model_mod.compile_forest

    def counted(data: bytes) -> CompiledForest:
        calls.append(len(data))
        return real(data)

    monkeypatch.setattr(model_mod, "compile_forest", counted)
    return calls


def test_load_model_serves_the_saved_forest_without_compiling(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = Registry.create(str(tmp_path / "reg"), 2)
    data = train_tiny(2)
    mv = _publish(reg, "acme", data, dump_forest(compile_forest(data), _sha(data)))
    calls = _no_compile(monkeypatch)
    model = model_mod.load_model(reg, mv)
    assert calls == [] and model.engine == "forest"
    x = np.random.default_rng(1).normal(size=(9, model.n_features)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x), compile_forest(data).predict(x))


def test_a_bad_saved_forest_is_logged_and_the_artifact_compiled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reg = Registry.create(str(tmp_path / "reg"), 2)
    data, other = train_tiny(2), train_tiny(5)
    mv = _publish(reg, "acme", data, dump_forest(compile_forest(other), _sha(other)))
    calls = _no_compile(monkeypatch)
    with caplog.at_level(logging.WARNING, logger=model_mod.__name__):
        model = model_mod.load_model(reg, mv)
    assert calls == [len(data)] and "saved forest not used" in caplog.text
    x = np.random.default_rng(1).normal(size=(9, model.n_features)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x), compile_forest(data).predict(x))


def test_a_corrupt_artifact_is_refused_even_with_a_good_saved_forest(tmp_path: Path) -> None:
    reg = Registry.create(str(tmp_path / "reg"), 2)
    data = train_tiny(2)
    mv = _publish(reg, "acme", data, dump_forest(compile_forest(data), _sha(data)))
    path = Path(reg.store.uri(reg.artifact_path(mv)))
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(ChecksumMismatch):
        model_mod.load_model(reg, mv)


@pytest.mark.parametrize("name", ["model.ubj", "_claim.json", "../x.arrow", "a/b.arrow",
                                  "X.arrow", "x.npy"])
def test_staging_refuses_a_companion_name_that_is_not_a_plain_npy(
        tmp_path: Path, name: str) -> None:
    reg = Registry.create(str(tmp_path / "reg"), 2)
    with pytest.raises(ValidationError):
        reg.stage_artifact("acme", train_tiny(1), "r1", {name: b"x"})
    assert not any(Path(reg.root, "artifacts").rglob("model.ubj"))
