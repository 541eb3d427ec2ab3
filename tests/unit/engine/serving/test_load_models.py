"""load_models: a bucket's models loaded at once give load_model's answers and refusals."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

import engine.serving.model as model_mod
from engine.serving.model import LoadedModel, SelfCheckMemo, load_model, load_models
from registry import ModelVersion, Registry
from registry.errors import ChecksumMismatch, ModelLoadError
from tests.conftest import publish_models

from .test_host import NAMES, tiny
from .test_model_checks import _trained_on


def _publish(reg: Registry, tenant: str, data: bytes, **fields: object) -> ModelVersion:
    publish_models(reg, {tenant: data}, f"run-{tenant}", features=NAMES, metrics={"auc": 0.9},
                   **fields)
    mv = reg.get(tenant).production
    assert mv is not None
    return mv


def _categorical() -> bytes:
    """A model with a categorical split (train_tiny trains numeric features only)."""
    rng = np.random.default_rng(5)

    df = pd.DataFrame({"amount": rng.normal(size=200), "age": rng.normal(size=200),
                       "velocity": pd.Categorical(rng.choice(["a", "b", "c"], 200))})
    y = (df["amount"] > 0).astype(int)
    b = xgb.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1},
                  xgb.DMatrix(df, y, enable_categorical=True), 4)
    return bytes(b.save_raw("ubj"))


@pytest.fixture()
def reg(tmp_path: Path) -> Registry:
    return Registry.create(str(tmp_path / "reg"), 2)


@pytest.fixture()
def versions(reg: Registry) -> dict[str, ModelVersion]:
    out = {t: _publish(reg, t, tiny(seed)) for seed, t in enumerate(["acme", "globex", "bad"])}
    out["swapped"] = _publish(reg, "swapped", _trained_on(["age", "amount", "velocity"]))
    out["cat"] = _publish(reg, "cat", _categorical(),
                          feature_types=("float", "float", "categorical"),
                          params={"categories": {"velocity": ["a", "b", "c"]}})
    path = Path(out["bad"].artifact_uri)
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0x55
    path.write_bytes(bytes(raw))
    out["liar"] = dataclasses.replace(out["acme"], tenant_id="liar", objective="reg:squarederror")
    out["unchecked"] = dataclasses.replace(out["globex"], forest_check=None)
    return out


def test_same_models_and_same_refusals_as_load_model(
        reg: Registry, versions: dict[str, ModelVersion]) -> None:
    order = ["acme", "bad", "swapped", "globex", "liar", "cat", "unchecked"]
    got = load_models(reg, [versions[t] for t in order])
    assert len(got) == len(order)
    x = np.array([[1.0, 2.0, 0.0], [np.nan, -1.0, 2.0], [0.5, 0.5, np.nan]], np.float32)
    for tenant, answer in zip(order, got, strict=True):
        mv = versions[tenant]
        try:
            want = load_model(reg, mv)
        except Exception as exc:  # noqa: BLE001 - compared with load_models' refusal
            assert type(answer) is type(exc), tenant
            assert str(answer) == str(exc), tenant
            continue
        assert isinstance(answer, LoadedModel), tenant
        assert (answer.engine, answer.feature_names, answer.objective, answer.version) == \
            (want.engine, want.feature_names, want.objective, want.version)
        assert dict(answer.index) == dict(want.index)
        if not answer.category_codes:
            assert np.array_equal(answer.predict(x), want.predict(x)), tenant
    assert isinstance(got[1], ChecksumMismatch)
    assert isinstance(got[2], ModelLoadError) and "order (amount, age, velocity)" in str(got[2])
    assert isinstance(got[4], ModelLoadError) and "objective" in str(got[4])
    assert isinstance(got[5], LoadedModel) and got[5].engine == "xgboost"
    assert got[0].engine == "forest" and got[3].engine == "forest"  # type: ignore[union-attr]


def test_self_check_rules_are_load_models_too(reg: Registry, versions: dict[str, ModelVersion],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[str] = []
    real = model_mod._selfcheck
    monkeypatch.setattr(model_mod, "_selfcheck",
                        lambda f, b: checked.append("x") or real(f, b))
    memo = SelfCheckMemo()
    unchecked = versions["unchecked"]
    first = load_models(reg, [versions["acme"], unchecked], memo)
    assert all(isinstance(m, LoadedModel) and m.engine == "forest" for m in first)
    assert len(checked) == (versions["acme"].forest_check is None) + 1
    assert unchecked.sha256 in memo
    before = len(checked)
    load_models(reg, [unchecked], memo)
    assert len(checked) == before  # remembered, as load_model remembers it
    load_models(reg, [unchecked])
    assert len(checked) == before + 1  # no memo: checked every time


def test_models_with_one_feature_list_share_one_index(
        reg: Registry, versions: dict[str, ModelVersion]) -> None:
    a, b = load_models(reg, [versions["acme"], versions["globex"]])
    assert isinstance(a, LoadedModel) and isinstance(b, LoadedModel)
    assert a.index is b.index and a.index == {n: i for i, n in enumerate(NAMES)}
    assert load_models(reg, []) == []
