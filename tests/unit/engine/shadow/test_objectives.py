"""Shadow differences and agreement per objective: regression (|diff|, agreement within
1%), multiclass (max |diff| over classes, same class) and categorical features (codes
carried over to a shadow whose category list differs); binary stays as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from engine.serving.model import load_model
from engine.settings import ServeSettings
from engine.shadow import ShadowTables, build_config, create_mirror, shadow_report
from engine.shadow.executors import build_pump
from engine.shadow.records import PairRecord
from engine.shadow.report import compare
from engine.shadow.tables import PAIRS
from engine.shadow.worker import row_diffs
from registry import Registry
from tests.conftest import publish_models

from .conftest import wait_until

NAMES = ("a", "b", "c")


def test_compare_regression_by_hand() -> None:
    p = np.array([10.0, 0.5, -200.0, 3.0])
    s = np.array([10.05, 0.52, -203.0, 3.5])
    c = compare(p, s, "reg:squarederror")
    assert c.pairs == 4 and c.agreement_rule == "within 1%"
    # |diff| <= 0.01 * max(1, |p|): 0.05 <= 0.1 yes, 0.02 > 0.01 no, 3 > 2 no, 0.5 > 0.03 no
    assert c.agreement == pytest.approx(0.25)
    assert c.mean_abs_diff == pytest.approx((0.05 + 0.02 + 3.0 + 0.5) / 4)
    assert c.max_abs_diff == pytest.approx(3.0)
    assert c.production_mean == pytest.approx(p.mean())


def test_compare_multiclass_by_hand() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.3, 0.4, 0.3], [0.1, 0.1, 0.8]])
    s = np.array([[0.6, 0.3, 0.1], [0.45, 0.35, 0.2], [0.1, 0.2, 0.7]])
    c = compare(p, s, "multi:softprob")
    assert c.pairs == 3 and c.agreement_rule == "same class"
    assert c.agreement == pytest.approx(2 / 3)  # row 1: class 1 -> class 0
    assert c.mean_abs_diff == pytest.approx((0.1 + 0.15 + 0.1) / 3)
    assert c.max_abs_diff == pytest.approx(0.15)
    assert c.production_mean == pytest.approx((0.7 + 0.4 + 0.8) / 3)  # top-class probability
    flat = compare(p.ravel(), s.ravel(), "multi:softprob", 3)  # as the pair log holds them
    assert flat == c
    np.testing.assert_allclose(row_diffs(p, s), [0.1, 0.15, 0.1])


def test_compare_binary_unchanged() -> None:
    p, s = np.array([0.1, 0.6, 0.4, 0.9]), np.array([0.2, 0.4, 0.45, 0.95])
    assert compare(p, s) == compare(p, s, "binary:logistic")
    assert compare(p, s).agreement == pytest.approx(0.75)
    assert compare(p, s).agreement_rule == "at 0.5"


# multi-class data (train_tiny trains one-output models only), regression beside it
def _train(objective: str, seed: int) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 3))
    params: dict[str, Any] = {}
    if objective == "multi:softprob":
        y = np.digitize(x[:, 0] * (1 + seed % 2) + x[:, 1], [-0.6, 0.6]).astype(np.float64)
        params["num_class"] = 3
    else:
        y = 5 * x[:, 0] - x[:, 2] * seed + rng.normal(size=300)
    return xgb.train({"objective": objective, "max_depth": 3, "nthread": 1, "seed": seed,
                      **params}, xgb.DMatrix(x, y, feature_names=list(NAMES)), 6)


def _publish(reg: Registry, tenant: str, booster: xgb.Booster, run: str, alias: str,
             **fields: Any) -> int:
    return publish_models(reg, {tenant: bytes(booster.save_raw("ubj"))}, run, alias=alias,
                          features=tuple(booster.feature_names or ()), metrics={},
                          **fields)[tenant]


@pytest.fixture()
def world(tmp_path: Path) -> dict[str, Any]:
    """``multi`` and ``reg`` at v1 (production) and v2 (shadow)."""
    root = str(tmp_path / "registry")
    reg = Registry.create(root, num_shards=2)
    models = {}
    for tenant, objective, extra in (("multi", "multi:softprob", {"num_class": 3}),
                                     ("reg", "reg:squarederror", {})):
        prod, shadow = _train(objective, 1), _train(objective, 2)
        _publish(reg, tenant, prod, f"{tenant}-1", "production", objective=objective, **extra)
        _publish(reg, tenant, shadow, f"{tenant}-2", "shadow", objective=objective, **extra)
        models[tenant] = (prod, shadow)
    settings = ServeSettings(registry=root, shadow_flush_s=0.2, shadow_worker="thread",
                             shadow_config_refresh_s=0.2)
    return {"root": root, "reg": reg, "models": models, "settings": settings}


def _item(world: dict[str, Any], tenant: str, seed: int) -> PairRecord:
    x = np.random.default_rng(seed).normal(size=(3 + seed % 3, 3)).astype(np.float32)
    preds = world["models"][tenant][0].inplace_predict(x).astype(np.float64)
    return PairRecord(seed, tenant, f"{tenant}{seed}", 1, 2, 1.7e9 + seed, 0.001, False, x,
                      preds)


def test_worker_diffs_per_objective_in_one_batch(world: dict[str, Any]) -> None:
    worker = build_pump(world["root"], world["settings"], "unit:1", Path("unused")).worker
    items = [_item(world, "multi", 0), _item(world, "reg", 1), _item(world, "multi", 2)]
    result = worker.process(items)
    assert result.outcomes == {"ok": 3}, worker.last_error
    want = []
    for item in items:
        shadow = world["models"][item.tenant_id][1].inplace_predict(item.x)
        diff = np.abs(shadow - item.predictions)
        want.append(diff.max(axis=1) if diff.ndim == 2 else diff)
    np.testing.assert_allclose(result.abs_diffs, np.concatenate(want), atol=1e-6, rtol=1e-6)
    worker.log.close()
    log = ShadowTables.for_registry(world["reg"]).query(PAIRS).to_pandas()
    rows = {i.tenant_id: 0 for i in items}
    for i in items:
        rows[i.tenant_id] += i.predictions.size  # multiclass: one pair per (row, class)
    assert log.groupby("tenant_id").size().to_dict() == rows

    multi = [i for i in items if i.tenant_id == "multi"]
    report = shadow_report(world["reg"], "multi")
    p = np.vstack([i.predictions for i in multi])
    s = np.vstack([world["models"]["multi"][1].inplace_predict(i.x) for i in multi])
    assert report.comparison.pairs == len(p) and report.requests == 2
    assert report.comparison.agreement_rule == "same class"
    assert report.comparison.agreement == pytest.approx(
        float(np.mean(p.argmax(1) == s.argmax(1))))
    assert report.comparison.max_abs_diff == pytest.approx(float(np.abs(p - s).max()),
                                                           abs=1e-6)
    doc = report.to_json()
    assert doc["agreement_rule"] == "same class" and "agreement" in doc
    reg_report = shadow_report(world["reg"], "reg").comparison
    p, s = items[1].predictions, world["models"]["reg"][1].inplace_predict(items[1].x)
    assert reg_report.pairs == len(p) and reg_report.agreement_rule == "within 1%"
    assert reg_report.mean_abs_diff == pytest.approx(float(np.abs(p - s).mean()), abs=1e-5)


def test_multiclass_through_a_host_and_its_mirror(world: dict[str, Any], h: Any) -> None:
    from engine.serving.host import ModelHostState

    state = ModelHostState(world["settings"], Registry.open(world["root"]))
    mirror, _ = create_mirror(state, state.settings)
    mirror.apply("multi", build_config("multi", 1.0))

    async def go() -> list[Any]:
        return [(await state.predict("multi", h.body(np.random.default_rng(i).normal(
            size=(2, 3))), f"m{i}")).predictions for i in range(4)]

    answers = h.run(go())
    assert all(np.array(a).shape == (2, 3) for a in answers)
    wait_until(lambda: mirror.outcomes["ok"] == 4)
    state.close()
    report = shadow_report(world["reg"], "multi")
    assert report.comparison.pairs == 8 and report.requests == 4
    assert 0 <= report.comparison.agreement <= 1  # type: ignore[operator]  # set with pairs


COLORS = ("blue", "green", "red")


# categorical data: train_tiny trains numeric features only
def _cat_model(categories: tuple[str, ...], seed: int) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    color = rng.choice(categories, 300)
    amount = rng.normal(size=300)
    frame = pd.DataFrame({"amount": amount,
                          "color": pd.Categorical(color, categories=list(categories))})
    y = ((color == "red") ^ (amount > 0)).astype(int)
    return xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1,
                      "max_cat_to_onehot": 1},
                     xgb.DMatrix(frame, y, enable_categorical=True), 6)


def test_categorical_codes_are_recoded_for_the_shadow(tmp_path: Path) -> None:
    """Production knows (blue, green, red); the shadow also 'amber', which shifts codes."""
    root = str(tmp_path / "registry")
    reg = Registry.create(root, num_shards=2)
    types = ("float", "categorical")
    prod, shadow = _cat_model(COLORS, 1), _cat_model(("amber", *COLORS), 2)
    _publish(reg, "acme", prod, "c1", "production", feature_types=types,
             params={"categories": {"color": list(COLORS)}})
    _publish(reg, "acme", shadow, "c2", "shadow", feature_types=types,
             params={"categories": {"color": ["amber", *COLORS]}})
    snap = reg.new_snapshot()
    served = load_model(reg, snap.version("acme", 1))
    rows: list[list[Any]] = [[0.5, "red"], [-0.5, "blue"], [0.2, None], [1.0, "green"]]
    from engine.serving.validation import to_matrix

    x = to_matrix(rows, served.feature_names, served.index, served.category_codes)
    item = PairRecord(1, "acme", "r0", 1, 2, 1.7e9, 0.001, False, x,
                      served.predict(x).astype(np.float64))
    settings = ServeSettings(registry=root, shadow_worker="thread")
    worker = build_pump(root, settings, "unit:1", tmp_path / "unused").worker
    result = worker.process([item])
    assert result.outcomes == {"ok": 1}, worker.last_error
    frame = pd.DataFrame({"amount": [r[0] for r in rows],
                          "color": pd.Categorical([r[1] for r in rows],
                                                  categories=["amber", *COLORS])})
    want = np.abs(shadow.inplace_predict(frame) - item.predictions)
    np.testing.assert_allclose(result.abs_diffs, want, atol=1e-6)
    worker.log.close()
