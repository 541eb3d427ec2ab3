"""The batch walk over a compiled forest: bit-for-bit what serving's ``predict`` answers,
and XGBoost's ``inplace_predict`` to 1e-6."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from engine.forest import compile_forest
from engine.forest.stacked import stack_forests, walk_forest, walk_stack, widen

from .conftest import train


def _model(seed: int, depth: int, trees: int, features: int,
           objective: str = "binary:logistic") -> tuple[xgb.Booster, np.ndarray]:
    return train(seed, depth=depth, trees=trees, features=features, rows=500, missing=0.15,
                 objective=objective)


@pytest.mark.parametrize("seed,depth,trees,features,objective", [
    (0, 5, 50, 20, "binary:logistic"),
    (1, 2, 3, 4, "binary:logistic"),
    (2, 7, 30, 9, "binary:logitraw"),
    (3, 4, 20, 6, "reg:squarederror"),
    (4, 1, 1, 1, "binary:logistic"),
])
def test_equals_serving_and_xgboost(seed: int, depth: int, trees: int, features: int,
                                    objective: str) -> None:
    booster, x = _model(seed, depth, trees, features, objective)
    forest = compile_forest(bytes(booster.save_raw("ubj")))
    rng = np.random.default_rng(seed + 100)
    queries = np.concatenate([x, (rng.normal(size=(300, features)) * 80).astype(np.float32)])
    queries[rng.random(queries.shape) < 0.02] = 1e30
    queries[rng.random(queries.shape) < 0.02] = -1e30
    for rows in (queries, queries[:1], queries[:7], queries[:0]):
        got = walk_forest(forest, rows)
        assert got.dtype == np.float32 and got.shape == (len(rows),)
        np.testing.assert_array_equal(got, forest.predict(rows) if len(rows) else got)
        if len(rows):
            want = booster.inplace_predict(rows)
            scale = 1.0 if objective == "binary:logistic" else np.maximum(1.0, np.abs(want))
            assert np.all(np.abs(got - want) <= 1e-6 * scale)


def test_chunks_match_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.forest import stacked as walk

    booster, x = _model(7, 5, 40, 8)
    forest = compile_forest(bytes(booster.save_raw("ubj")))
    whole = walk_forest(forest, x)
    monkeypatch.setattr(walk, "_CHUNK_ELEMENTS", 3 * 40)  # 3 rows per chunk
    np.testing.assert_array_equal(walk_forest(forest, x), whole)


def test_wrong_width_is_refused() -> None:
    booster, _ = _model(5, 3, 5, 4)
    forest = compile_forest(bytes(booster.save_raw("ubj")))
    with pytest.raises(ValueError, match=r"expected \(rows, 4\)"):
        walk_forest(forest, np.zeros((3, 5), np.float32))


def test_stack_of_many_models_equals_each_alone() -> None:
    """Models with their own feature subsets, orders, depths and objectives, stacked over
    one shared matrix and walked together: each row exactly what its forest predicts."""
    shared = 7
    rng = np.random.default_rng(11)
    x = (rng.normal(size=(60, shared)) * 50).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan
    x[3] = np.nan  # a row with every value missing
    specs = [(21, 5, 12, 4, "binary:logistic"), (22, 2, 12, 7, "reg:squarederror"),
             (23, 6, 12, 3, "binary:logitraw"), (24, 1, 12, 1, "binary:logistic")]
    forests, maps = [], []
    for seed, depth, trees, features, objective in specs:
        booster, _ = _model(seed, depth, trees, features, objective)
        forests.append(compile_forest(bytes(booster.save_raw("ubj"))))
        maps.append(np.random.default_rng(seed).permutation(shared)[:features])
    stack = stack_forests(forests, maps, shared)
    assert stack.depth == max(f.depth for f in forests)
    models = rng.integers(0, len(forests), size=x.shape[0])
    rows = rng.permutation(x.shape[0])  # rows in any order, each with its own model
    got = walk_stack(stack, widen(x), rows, models)
    for m, (forest, cols) in enumerate(zip(forests, maps, strict=True)):
        mine = models == m
        np.testing.assert_array_equal(got[mine], forest.predict(x[rows[mine]][:, cols]))


def test_stack_refuses_mixed_tree_counts_and_bad_maps() -> None:
    small = compile_forest(bytes(_model(31, 3, 5, 4)[0].save_raw("ubj")))
    large = compile_forest(bytes(_model(32, 3, 6, 4)[0].save_raw("ubj")))
    with pytest.raises(ValueError, match="one tree count"):
        stack_forests([small, large], [np.arange(4), np.arange(4)], 4)
    with pytest.raises(ValueError, match="column map"):
        stack_forests([small], [np.arange(3)], 4)
    with pytest.raises(ValueError, match="column map"):
        stack_forests([small], [np.arange(1, 5)], 4)


def test_walk_refuses_rows_and_models_out_of_range() -> None:
    forest = compile_forest(bytes(_model(33, 3, 4, 3)[0].save_raw("ubj")))
    stack = stack_forests([forest], [np.arange(3)], 3)
    wide = widen(np.zeros((5, 3), np.float32))
    for rows, models in (([5], [0]), ([-1], [0]), ([0], [1]), ([0, 1], [0])):
        with pytest.raises(ValueError, match="out of range"):
            walk_stack(stack, wide, np.array(rows), np.array(models))
