"""Compiled forests stacked and walked together, for many rows of many models at once.

:meth:`CompiledForest.predict` is tuned for a request's few rows. A scoring bucket holds
a day of rows of a hundred-odd tenants, so here the forests of all its tenants are
stacked into one set of node arrays (:func:`stack_forests`), each node's feature index
pointing into one shared widened matrix of the bucket's columns (:func:`widen`), and
:func:`walk_stack` walks every row of every tenant down its own model's trees together,
one level per step: a few numpy calls per level for the whole bucket instead of a few
dozen calls per tenant, and no per-tenant feature matrix. Gathers use ``intp`` indices
and fresh outputs (``take`` with ``out=`` or ``int32`` indices is 2-3x slower per element
on numpy 2.x). The leaves, their float32 sum in tree order after the base margin, and
the sigmoid are computed exactly as there, so the scores are bit-for-bit those serving
answers (tests/unit/engine/forest/test_stacked.py). Batch scoring (:mod:`engine.batch.predict`)
stacks a bucket's forests; models served by an XGBoost Booster (the forest's fallback:
multi-class, categorical splits, …) are predicted through it instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from engine.forest.compiled import CompiledForest

__all__ = ["ForestStack", "forest_of", "stack_forests", "walk_forest", "walk_stack", "widen"]

_CHUNK_ELEMENTS = 1 << 15  # bounds the (rows x trees) temporaries of one step (L2-sized)


class Served(Protocol):
    """A loaded model as serving holds it (``engine.serving.model.LoadedModel``)."""

    @property
    def predictor(self) -> Callable[..., Any]: ...


@dataclass(frozen=True, eq=False)
class ForestStack:
    """Compiled forests with one tree count, their nodes in one set of arrays."""

    trees: int
    depth: int
    roots: np.ndarray  # (models, trees) intp: each model's tree roots, in tree order
    feature: np.ndarray  # (nodes,) intp: column of the shared widened matrix
    threshold: np.ndarray  # (nodes,) float32: right if x >= it; leaf NaN
    left: np.ndarray  # (nodes,) intp: left child (right = left + 1); a leaf itself
    value: np.ndarray  # (nodes,) float32: leaf values, 0 elsewhere
    base_margin: np.ndarray  # (models,) float32
    sigmoid: np.ndarray  # (models,) bool


def forest_of(model: Served) -> CompiledForest | None:
    """The compiled forest behind a loaded model (None when it is served by a Booster).

    ``load_model`` hands out the forest's bound ``predict`` as the model's predictor.
    """
    owner = getattr(model.predictor, "__self__", None)
    return owner if isinstance(owner, CompiledForest) else None


def widen(x: np.ndarray) -> np.ndarray:
    """``[x with NaN -> -inf | x with NaN -> +inf]``: ``(rows, 2 * cols)`` float32.

    A node's feature index then also encodes where a missing value goes, as in
    :class:`CompiledForest` (column ``c``: left, ``c + cols``: right).
    """
    x = np.asarray(x, dtype=np.float32)
    cols = x.shape[1]
    wide = np.empty((x.shape[0], 2 * cols), dtype=np.float32)
    np.fmax(x, -np.inf, out=wide[:, :cols])
    np.fmin(x, np.inf, out=wide[:, cols:])
    return wide


def stack_forests(forests: Sequence[CompiledForest], columns: Sequence[np.ndarray],
                  width: int) -> ForestStack:
    """Stack forests that read their features from one shared matrix.

    Args:
        forests: forests with the same number of trees.
        columns: per forest, the shared matrix's column of each of its features.
        width: the shared matrix's column count (before :func:`widen`).

    Raises:
        ValueError: the forests differ in tree count, or a column map does not fit.
    """
    trees = {f.roots.size for f in forests}
    if len(trees) != 1 or len(columns) != len(forests):
        raise ValueError(f"expected forests with one tree count, got {sorted(trees)}")
    sizes = np.array([f.left.size for f in forests], dtype=np.intp)
    starts = np.cumsum(sizes) - sizes
    owner = np.repeat(np.arange(len(forests)), sizes)
    nf = np.array([f.n_features for f in forests], dtype=np.intp)
    maps = [c if f.n_features else np.zeros(1, np.intp)  # a leaf-only forest reads column 0
            for f, c in zip(forests, columns, strict=True)]
    lengths = np.array([len(m) for m in maps], dtype=np.intp)
    flat_maps = np.concatenate(maps).astype(np.intp)
    if (lengths != np.maximum(nf, 1)).any() or flat_maps.min() < 0 or flat_maps.max() >= width:
        raise ValueError("a column map does not match its forest's features")
    map_start = np.cumsum(lengths) - lengths
    feature = np.concatenate([f.feature for f in forests]).astype(np.intp)
    node_nf = np.maximum(nf[owner], 1)
    right = feature >= node_nf  # a missing value goes right: the +inf half
    local = np.where(right, feature - node_nf, feature)
    shared = flat_maps[map_start[owner] + local] + right * width
    left = np.concatenate([f.left for f in forests]).astype(np.intp) + starts[owner]
    roots = np.stack([f.roots for f in forests]).astype(np.intp) + starts[:, None]
    return ForestStack(trees.pop(), max(f.depth for f in forests), roots, shared,
                       np.concatenate([f.threshold for f in forests]), left,
                       np.concatenate([f.value for f in forests]),
                       np.array([f.base_margin for f in forests], dtype=np.float32),
                       np.array([f.sigmoid for f in forests], dtype=bool))


def walk_stack(stack: ForestStack, wide: np.ndarray, rows: np.ndarray,
               models: np.ndarray) -> np.ndarray:
    """Each of ``rows`` of ``wide`` predicted by its model of ``stack``, as serving does.

    Args:
        stack: the stacked forests.
        wide: the shared matrix after :func:`widen`, C-contiguous float32.
        rows: rows of ``wide`` to predict.
        models: per row, its model's position in ``stack``.

    Returns:
        ``(len(rows),)`` float32: probabilities (sigmoid objectives) or raw values.

    Raises:
        ValueError: a row outside ``wide`` or a model outside ``stack``.
    """
    rows = np.asarray(rows, dtype=np.intp)
    models = np.asarray(models, dtype=np.intp)
    if rows.shape != models.shape or (rows.size and (
            rows.min() < 0 or rows.max() >= wide.shape[0] or models.min() < 0
            or models.max() >= stack.roots.shape[0])):
        raise ValueError("rows or models out of range")
    flat = wide.ravel()
    out = np.empty(rows.size, dtype=np.float32)
    step = max(1, _CHUNK_ELEMENTS // stack.trees)
    for lo in range(0, rows.size, step):
        hi = min(rows.size, lo + step)
        out[lo:hi] = _margins(stack, flat, rows[lo:hi] * wide.shape[1], models[lo:hi])
    sig = stack.sigmoid[models]
    if sig.any():  # as CompiledForest.predict: a correctly rounded exp, in float64
        e = np.exp(-out[sig].astype(np.float64)).astype(np.float32)
        e += np.float32(1.0)
        out[sig] = np.reciprocal(e, out=e)
    return out


def _margins(stack: ForestStack, flat: np.ndarray, offset: np.ndarray,
             models: np.ndarray) -> np.ndarray:
    """Base margin plus every tree's leaf, summed in float32 in tree order, per row."""
    idx = stack.roots[models]  # (rows, trees)
    offset = offset[:, None]
    feature, threshold, left = stack.feature, stack.threshold, stack.left
    # Every index is in range by construction (stack_forests and walk_stack check their
    # inputs), so the gathers skip numpy's per-element bounds check (mode="clip": ~10%).
    for _ in range(stack.depth):  # a leaf points to itself, so extra steps stay put
        col = feature.take(idx, mode="clip")
        col += offset
        right = flat.take(col, mode="clip") >= threshold.take(idx, mode="clip")
        idx = left.take(idx, mode="clip")
        idx += right
    margin = stack.base_margin[models]  # a copy
    # XGBoost adds each tree's leaf to a float32 running margin, in tree order (one add
    # per tree over the rows is cheaper than a cumsum along the rows' trees).
    for leaves in stack.value.take(idx.T, mode="clip"):
        margin += leaves
    return margin


def walk_forest(forest: CompiledForest, x: np.ndarray) -> np.ndarray:
    """``forest.predict(x)``, computed by the batch walk (same arrays, same arithmetic).

    Raises:
        ValueError: ``x`` is not 2-D with ``forest.n_features`` columns.
    """
    x = np.asarray(x, dtype=np.float32)
    nf = forest.n_features
    if x.ndim != 2 or x.shape[1] != nf:
        raise ValueError(f"expected (rows, {nf}) features, got {x.shape}")
    if nf == 0:
        x = np.zeros((x.shape[0], 1), np.float32)
    stack = stack_forests([forest], [np.arange(nf)], max(nf, 1))
    rows = np.arange(x.shape[0])
    return walk_stack(stack, widen(x), rows, np.zeros_like(rows))
