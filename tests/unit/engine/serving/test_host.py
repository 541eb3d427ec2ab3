"""ModelHostState without Ray: parity, errors, hot swap, corrupt artifacts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from engine.serving.host import ModelHostState
from engine.settings import ServeSettings
from registry import Registry
from registry.errors import ChecksumMismatch, UnknownTenant, ValidationError
from tests.conftest import publish_models, train_tiny

NAMES = ("amount", "age", "velocity")


def tiny(seed: int) -> bytes:
    return train_tiny(seed, features=NAMES)


def publish(reg: Registry, run: str, models: dict[str, bytes]) -> None:
    publish_models(reg, models, run, features=NAMES, metrics={"auc": 0.9})


@pytest.fixture()
def reg(tmp_path: Path) -> Registry:
    reg = Registry.create(str(tmp_path / "reg"), 2)
    publish(reg, "r1", {"acme": tiny(1), "globex": tiny(2)})
    return reg


def body(rows: list) -> bytes:
    return json.dumps({"instances": rows}).encode()


def test_parity_with_offline_prediction(reg: Registry) -> None:
    rows = np.random.default_rng(9).normal(size=(50, 3))
    rows[3, 1] = np.nan
    offline = xgb.Booster()
    offline.load_model(bytearray(reg.read_artifact(reg.get("acme").production)))
    expected = offline.predict(xgb.DMatrix(rows, feature_names=list(NAMES)))

    async def main() -> list[float]:
        state = ModelHostState(ServeSettings(registry=reg.root), reg)
        payload = [[None if np.isnan(v) else float(v) for v in r] for r in rows]
        pred = await state.predict("acme", body(payload))
        assert pred.version == 1
        return pred.predictions

    np.testing.assert_allclose(asyncio.run(main()), expected, atol=1e-6)


def test_errors_and_hit_accounting(reg: Registry) -> None:
    async def main() -> None:
        state = ModelHostState(ServeSettings(registry=reg.root), reg)
        with pytest.raises(UnknownTenant):
            await state.predict("nobody", body([[1, 2, 3]]))
        with pytest.raises(ValidationError, match="expects 3"):
            await state.predict("acme", body([[1, 2]]))
        await state.predict("acme", body([[1, 2, 3]]))
        await state.predict("acme", body([[1, 2, 3]]))
        # every lookup counts, including the one whose rows were then refused
        assert state.metrics.cache_misses._value.get() == 1
        assert state.metrics.cache_hits._value.get() == 2

    asyncio.run(main())


def test_new_production_version_is_picked_up_and_old_evicted(reg: Registry) -> None:
    async def main() -> None:
        state = ModelHostState(ServeSettings(registry=reg.root), reg)
        first = await state.predict("acme", body([[1, 2, 3]]))
        publish(reg, "r2", {"acme": tiny(7)})
        assert await state.refresh_once() is True
        second = await state.predict("acme", body([[1, 2, 3]]))
        assert (first.version, second.version) == (1, 2)
        keys = state.cache.keys()
        assert [k.version for k in keys if k.tenant_id == "acme"] == [2]
        assert state.metrics.cache_evictions._value.get() == 1

    asyncio.run(main())


def test_corrupt_artifact_fails_only_that_tenant(reg: Registry) -> None:
    path = Path(reg.get("globex").production.artifact_uri)
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0x55
    path.write_bytes(bytes(raw))

    async def main() -> None:
        state = ModelHostState(ServeSettings(registry=reg.root), reg)
        for _ in range(3):
            with pytest.raises(ChecksumMismatch):
                await state.predict("globex", body([[1, 2, 3]]))
        ok = await state.predict("acme", body([[1, 2, 3]]))
        assert ok.version == 1
        assert state.metrics.model_load_failures._value.get() == 1  # remembered, not retried
        assert len(state.cache) == 1

    asyncio.run(main())


def test_preload_fills_a_share_of_the_budget(reg: Registry) -> None:
    async def main() -> None:
        state = ModelHostState(ServeSettings(registry=reg.root), reg)
        assert await state.preload(["acme", "nobody", "globex"], budget_bytes=1) == 1
        assert len(state.cache) == 1
        assert await state.preload(["acme", "globex"], budget_bytes=10**9) == 2

    asyncio.run(main())


def test_models_compile_to_a_forest_and_odd_ones_fall_back(reg: Registry) -> None:
    from engine.serving.model import load_model

    loaded = load_model(reg, reg.get("acme").production)
    assert loaded.engine == "forest" and loaded.nbytes < reg.get("acme").production.size_bytes
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3))
    # a dart booster (train_tiny trains gbtree only): the forest hands it to XGBoost
    dart = xgb.train({"booster": "dart", "objective": "binary:logistic", "nthread": 1,
                      "max_depth": 2}, xgb.DMatrix(x, (x[:, 0] > 0).astype(int),
                                                   feature_names=list(NAMES)), 4)
    publish(reg, "r-dart", {"darty": bytes(dart.save_raw("ubj"))})
    fallback = load_model(reg, reg.get("darty").production)
    assert fallback.engine == "xgboost"
    np.testing.assert_allclose(fallback.predict(x.astype(np.float32)),
                               dart.inplace_predict(x.astype(np.float32)), atol=1e-6)
