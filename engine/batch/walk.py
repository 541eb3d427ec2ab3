"""Batch predictions from a serving model's compiled forest, for many rows at once.

:meth:`CompiledForest.predict` is tuned for a request's few rows; for a tenant's day of
rows (tens to thousands) the same level-by-level walk over the same arrays runs about
twice as fast with preallocated buffers and ``take`` (measured at 125 rows, 50 trees x
depth 5: 0.25 ms against 0.45 ms). The leaves, their float32 sum in tree order after the
base margin, and the sigmoid are computed exactly as there, so the scores are bit-for-bit
those serving answers (tests/unit/batch/test_walk.py). Models served by an XGBoost
Booster (the forest's fallback) predict through it unchanged.
"""

from __future__ import annotations

import numpy as np

from engine.serving.forest import CompiledForest
from engine.serving.model import LoadedModel

__all__ = ["forest_of", "predict_rows", "walk_forest"]

_CHUNK_ELEMENTS = 1 << 18  # bounds the (rows x trees) buffers of one step


def forest_of(model: LoadedModel) -> CompiledForest | None:
    """The compiled forest behind a loaded model (None when it is served by a Booster).

    ``load_model`` hands out the forest's bound ``predict`` as the model's predictor.
    """
    owner = getattr(model.predictor, "__self__", None)
    return owner if isinstance(owner, CompiledForest) else None


def predict_rows(model: LoadedModel, x: np.ndarray) -> np.ndarray:
    """What serving predicts for each row of ``x`` (float32, NaN = missing).

    Args:
        model: a model from :func:`engine.serving.model.load_model`.
        x: ``(rows, model.n_features)`` features in the model's order.

    Returns:
        ``(rows,)`` float32 scores.
    """
    forest = forest_of(model)
    return model.predict(x) if forest is None else walk_forest(forest, x)


def walk_forest(forest: CompiledForest, x: np.ndarray) -> np.ndarray:
    """``forest.predict(x)``, computed for a batch (same arrays, same arithmetic).

    Raises:
        ValueError: ``x`` is not 2-D with ``forest.n_features`` columns.
    """
    x = np.asarray(x, dtype=np.float32)
    nf = forest.n_features
    if x.ndim != 2 or x.shape[1] != nf:
        raise ValueError(f"expected (rows, {nf}) features, got {x.shape}")
    rows, trees = x.shape[0], forest.roots.size
    margin = np.empty(rows, dtype=np.float32)
    step = max(1, _CHUNK_ELEMENTS // trees)
    for lo in range(0, rows, step):
        hi = min(rows, lo + step)
        leaves = forest.value.take(_leaves(forest, x[lo:hi])).reshape(hi - lo, trees)
        out = np.empty((hi - lo, trees + 1), dtype=np.float32)
        out[:, 0] = forest.base_margin
        out[:, 1:] = leaves
        # XGBoost adds each tree's leaf to a float32 running margin, in tree order.
        margin[lo:hi] = np.cumsum(out, axis=1, dtype=np.float32)[:, -1]
    if forest.sigmoid:  # as CompiledForest.predict: a correctly rounded exp, in float64
        e = np.exp(-margin.astype(np.float64)).astype(np.float32)
        e += np.float32(1.0)
        margin = np.reciprocal(e, out=e)
    return margin


def _leaves(forest: CompiledForest, x: np.ndarray) -> np.ndarray:
    """Leaf node of every (row, tree), flattened row-major."""
    rows, nf, trees = x.shape[0], forest.n_features, forest.roots.size
    wide = np.empty((rows, 2 * nf), dtype=np.float32)
    np.fmax(x, -np.inf, out=wide[:, :nf])  # NaN -> -inf: goes left
    np.fmin(x, np.inf, out=wide[:, nf:])  # NaN -> +inf: goes right
    flat = wide.ravel()
    n = rows * trees
    offset = np.repeat(np.arange(rows, dtype=np.int32) * np.int32(2 * nf), trees)
    idx = np.tile(forest.roots, rows)
    col = np.empty(n, dtype=np.int32)
    val = np.empty(n, dtype=np.float32)
    thr = np.empty(n, dtype=np.float32)
    right = np.empty(n, dtype=bool)
    for _ in range(forest.depth):  # a leaf points to itself, so extra steps stay put
        forest.feature.take(idx, out=col)
        col += offset
        flat.take(col, out=val)
        forest.threshold.take(idx, out=thr)
        np.greater_equal(val, thr, out=right)
        idx = forest.left.take(idx)
        idx += right
    return idx
