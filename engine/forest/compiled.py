"""A compiled-forest predictor built straight from an XGBoost UBJSON artifact (no Booster).

All trees are flattened into one node array where a right child is its left child + 1
and a leaf points to itself. x is widened to ``[x with NaN->-inf | x with NaN->+inf]`` so a
node's feature index also encodes its missing-value direction, and a step is
``left[i] + (x[feature[i]] >= threshold[i])``. One row decides every node at once and
then follows pointers ``depth`` times; a batch walks all trees of all rows one level per
step. Leaves are summed in float32, in tree order, after the base margin, as XGBoost does.

Supported: ``gbtree`` with numerical splits, one output (``num_class`` <= 1, one target),
objectives ``binary:logistic`` / ``reg:logistic`` (sigmoid) and ``binary:logitraw`` /
``reg:squarederror`` (identity). Anything else raises :class:`ForestUnsupported`, as do
malformed bytes (:class:`MalformedModel`, also a ``ValueError``).

Measured on the 2-core dev box while it was shared (load ~4), 50 trees x depth 5 x 20
features, OMP_NUM_THREADS=1, ``OMP_NUM_THREADS=1 python benchmarks/forest_bench.py``:
compile 0.24-0.31 ms vs 0.34-0.40 ms for ``Booster.load_model`` (ratio ~0.8); predict
1 row 22-31 us vs 170-200 us for ``inplace_predict``; 100 rows 0.23-0.34 ms vs ~0.24 ms;
``nbytes`` 29.6 KB for a 96 KB artifact. Outputs match ``inplace_predict`` bit for bit on
the benchmark model and within 1e-6 in the tests (sigmoid via a correctly rounded exp).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.forest.trees import FIELD_DTYPES, NotNumerical, TreeFields, read_trees
from engine.forest.ubjson import UBJSONError, loads

__all__ = [
    "FOREST_VERSION", "CompiledForest", "ForestUnsupported", "MalformedModel", "compile_forest",
    "probe_rows",
]

FOREST_VERSION = "1"
"""The compiler's semantics, as a version's index row records them (``forest_check``) when
the training job found the compiled forest equal to XGBoost on the probe rows; serving
skips its own self-check for such rows. Bump it whenever what a forest predicts or how it
is checked may change (this module, :mod:`engine.forest.trees`, :mod:`engine.forest.ubjson`, :func:`probe_rows`, the
self-check in :mod:`engine.serving.model`): rows checked by an older compiler are then
checked again at load."""

_SIGMOID = ("binary:logistic", "reg:logistic")
_IDENTITY = ("binary:logitraw", "reg:squarederror")
_CHUNK_ELEMENTS = 1 << 16  # bounds the (rows x trees) temporaries of a batch
# A numpy call costs about as much as this many elements of a gather: one row decides all
# nodes at once (3 calls over every node) unless walking (6 calls per level) is cheaper.
_OP_COST = 700


class ForestUnsupported(Exception):
    """The model uses something this predictor does not handle; serve it with a Booster."""


class MalformedModel(ForestUnsupported, ValueError):
    """The bytes are not a well-formed XGBoost UBJSON model."""


@dataclass(frozen=True, eq=False)
class CompiledForest:
    """A binary/regression gbtree flattened to numpy arrays, predicting without XGBoost."""

    n_features: int
    feature_names: tuple[str, ...]
    nbytes: int
    sigmoid: bool
    base_margin: np.float32
    depth: int
    roots: np.ndarray = field(repr=False)  # (trees,) int32: each tree's root node
    feature: np.ndarray = field(repr=False)  # (nodes,) int32: column of the widened row
    threshold: np.ndarray = field(repr=False)  # (nodes,) float32: right if x >= it; leaf NaN
    left: np.ndarray = field(repr=False)  # (nodes,) int32: left child (right = left + 1); leaf self
    value: np.ndarray = field(repr=False)  # (nodes,) float32: leaf values, 0 elsewhere
    names_stored: bool = True  # False: the artifact has no feature names (f0, f1, … here)
    objective: str = "binary:logistic"  # the artifact's XGBoost objective

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predict like ``Booster.inplace_predict(x)`` (``predict_type="value"``).

        Args:
            x: (rows, n_features) feature values, NaN = missing; cast to float32.

        Returns:
            (rows,) float32 probabilities (sigmoid objectives) or raw values.

        Raises:
            ValueError: ``x`` is not 2-D with ``n_features`` columns.
        """
        x = np.asarray(x, dtype=np.float32)
        nf = self.n_features
        if x.ndim != 2 or x.shape[1] != nf:
            raise ValueError(f"expected (rows, {nf}) features, got {x.shape}")
        rows, trees = x.shape[0], self.roots.size
        out = np.empty((rows, trees + 1), dtype=np.float32)
        out[:, 0] = self.base_margin
        step = max(1, _CHUNK_ELEMENTS // trees)
        for lo in range(0, rows, step):
            hi = min(rows, lo + step)
            wide = np.empty((hi - lo, 2 * nf), dtype=np.float32)
            np.fmax(x[lo:hi], -np.inf, out=wide[:, :nf])  # NaN -> -inf: goes left
            np.fmin(x[lo:hi], np.inf, out=wide[:, nf:])  # NaN -> +inf: goes right
            walk = hi - lo > 1 or self.left.size * 3 > _OP_COST * 5 * self.depth
            out[lo:hi, 1:] = self.value[self._walk(wide) if walk else self._one_row(wide[0])]
        # XGBoost adds each tree's leaf to a float32 running margin, in tree order.
        margin = np.cumsum(out, axis=1, dtype=np.float32)[:, -1]
        if self.sigmoid:  # expf is correctly rounded; numpy's float32 exp is not always
            e = np.exp(-margin.astype(np.float64)).astype(np.float32)
            e += np.float32(1.0)
            margin = np.reciprocal(e, out=e)
        return margin

    def _one_row(self, wide: np.ndarray) -> np.ndarray:
        """Leaves for one row: decide every node at once, then follow ``depth`` pointers."""
        nxt = self.left + (wide[self.feature] >= self.threshold)
        idx = self.roots
        for _ in range(self.depth):
            idx = nxt[idx]
        return idx

    def _walk(self, wide: np.ndarray) -> np.ndarray:
        """Leaves for a (rows, trees) batch: all trees of all rows step down together."""
        flat, left, feature, threshold = wide.ravel(), self.left, self.feature, self.threshold
        offset = (np.arange(wide.shape[0], dtype=np.int32) * wide.shape[1])[:, None]
        idx = np.broadcast_to(self.roots, (wide.shape[0], self.roots.size))
        for _ in range(self.depth):
            idx = left[idx] + (flat[feature[idx] + offset] >= threshold[idx])
        return idx


def compile_forest(ubj: bytes) -> CompiledForest:
    """Compile an artifact, as written by ``bytes(booster.save_raw("ubj"))``.

    Args:
        ubj: the model's UBJSON bytes.

    Returns:
        The compiled forest.

    Raises:
        MalformedModel: the bytes are not a well-formed XGBoost UBJSON model.
        ForestUnsupported: the model uses a feature this predictor does not handle.
    """
    buf = bytes(ubj)
    try:
        doc = loads(buf, hooks={"trees": read_trees}) if buf else None
        learner = doc["learner"]  # type: ignore[index]
        booster, param = learner["gradient_booster"], learner["learner_model_param"]
        objective = learner["objective"]["name"]
        num_feature = int(param["num_feature"])
        names = learner.get("feature_names") or [f"f{i}" for i in range(num_feature)]
        types = learner.get("feature_types") or []
    except UBJSONError as exc:
        raise MalformedModel(str(exc)) from exc
    except NotNumerical as exc:
        raise ForestUnsupported(str(exc)) from exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedModel(f"not an XGBoost model: {exc!r}") from exc
    if booster.get("name") != "gbtree":
        raise ForestUnsupported(f"booster {booster.get('name')!r} is not supported")
    if objective not in _SIGMOID + _IDENTITY:
        raise ForestUnsupported(f"objective {objective!r} is not supported")
    if int(param.get("num_class", "0")) > 1 or int(param.get("num_target", "1")) != 1:
        raise ForestUnsupported("multi-class / multi-target models are not supported")
    if "c" in types:
        raise ForestUnsupported("categorical features are not supported")
    if len(names) != num_feature or not all(isinstance(n, str) for n in names):
        raise MalformedModel("feature_names do not match num_feature")
    try:
        model = booster["model"]
        trees: list[TreeFields] = model["trees"]
        info = np.asarray(model.get("tree_info", [0] * len(trees)))
        if info.shape != (len(trees),) or np.any(info != 0):
            raise ForestUnsupported("trees of an output group other than 0")
        sigmoid = objective in _SIGMOID
        base = _base_margin(param["base_score"], sigmoid)
        arrays = _flatten(trees, num_feature)
    except ForestUnsupported:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedModel(f"malformed trees: {exc!r}") from exc
    depth, roots, feature, threshold, left, value = arrays
    return CompiledForest(num_feature, tuple(names), sum(a.nbytes for a in arrays[1:]),
                          sigmoid, base, depth, roots, feature, threshold, left, value,
                          names_stored=bool(learner.get("feature_names")),
                          objective=str(objective))


def probe_rows(forest: CompiledForest, rows: int = 8) -> np.ndarray:
    """Deterministic rows that exercise ``forest``'s splits, for a load-time self-check.

    Each value is one of its feature's split thresholds (the ``>=`` edge), the float32 just
    below it, or missing (NaN: the default direction), cycling so different rows take
    different branches; the last row is all NaN. Features the trees never split on are 0.

    Args:
        forest: the compiled forest.
        rows: how many rows.

    Returns:
        ``(rows, n_features)`` float32.
    """
    nf = forest.n_features
    inner = ~np.isnan(forest.threshold)
    cols = forest.feature[inner] % nf
    ths = forest.threshold[inner][np.argsort(cols, kind="stable")]  # by feature, node order
    count = np.bincount(cols, minlength=nf)
    start = np.cumsum(count) - count
    r, j = np.arange(rows)[:, None], np.arange(nf)[None, :]
    if ths.size:
        at = start + (r * 5 + j * 3) % np.maximum(count, 1)
        pick = ths[np.minimum(at, ths.size - 1)]  # features without splits: replaced below
    else:
        pick = np.zeros((rows, nf), dtype=np.float32)
    kind = (r + j) % 3  # 0: on the threshold (goes right), 1: just below (left), 2: missing
    x = np.where(kind == 1, np.nextafter(pick, np.float32(-np.inf)), pick)
    x = np.where(count > 0, x, np.float32(0)).astype(np.float32)
    x[kind == 2] = np.nan
    x[-1] = np.nan
    return x


def _base_margin(raw: Any, sigmoid: bool) -> np.float32:
    """The margin offset: base_score itself, or its logit for sigmoid objectives."""
    text = str(raw).strip().strip("[]")
    values = [np.float32(v) for v in text.split(",") if v.strip()]
    if len(values) != 1 or not math.isfinite(values[0]):
        raise ForestUnsupported(f"base_score {raw!r} is not one finite number")
    score = values[0]
    if not sigmoid:
        return score
    if not 0 < score < 1:
        raise MalformedModel(f"base_score {raw!r} is not a probability")
    one = np.float32(1.0)
    return np.float32(-np.log(one / score - one))  # float32, as XGBoost's ProbToMargin


def _flatten(trees: list[TreeFields], num_feature: int) -> tuple[Any, ...]:
    """(depth, roots, feature, threshold, left, value) arrays of all trees."""
    if not trees:
        raise ForestUnsupported("a model without trees")
    fields = list(zip(*trees, strict=True))
    dl, lc, rc, cond, split = (np.frombuffer(b"".join(f), dt)
                               for f, dt in zip(fields, FIELD_DTYPES, strict=True))
    sizes = np.fromiter(map(len, fields[1]), np.int32, len(trees)) // 4
    starts = np.cumsum(sizes, dtype=np.int32) - sizes
    base, limit = np.repeat(starts, sizes), np.repeat(sizes - 1, sizes).view(np.uint32)
    inner = lc != -1
    leaf = ~inner
    # Children of inner nodes lie in 1..n-1 of their tree (-1 - 1 wraps to a huge uint32);
    # a leaf has no children at all.
    has_left = (lc - 1).view(np.uint32) < limit
    if (sizes.min() < 1 or (has_left ^ inner).any()
            or (has_left ^ ((rc - 1).view(np.uint32) < limit)).any()
            or not ((split.astype(np.uint32) < num_feature) | leaf).all()):
        raise MalformedModel("tree node indices out of range")
    if not ((cond > -np.inf) | leaf).all():  # x >= NaN/-inf cannot send NaN->-inf left
        raise ForestUnsupported("a split threshold that is NaN or -inf")
    left = lc + base
    right = rc + base
    left[leaf] = np.flatnonzero(leaf)  # a leaf steps to itself
    feature = np.where(dl != 0, split, split + num_feature)
    feature[leaf] = 0  # a deleted (pruned) leaf keeps a junk feature index
    threshold = cond.astype(np.float32)
    value = np.where(leaf, threshold, np.float32(0))
    threshold[leaf] = np.nan  # x >= NaN is False: stay on the leaf
    apart = np.flatnonzero(inner & (right != left + 1))
    if apart.size:  # the walk needs right == left + 1: give such children adjacent copies
        copied = np.stack((left[apart], right[apart]), axis=1).ravel()
        new = np.arange(left.size, left.size + copied.size, dtype=np.int32)
        left[apart] = new[::2]  # first, so copies of moved nodes point to their copies
        left = np.concatenate((left, np.where(leaf[copied], new, left[copied])))
        feature, threshold, value, inner = (np.concatenate((a, a[copied]))
                                            for a in (feature, threshold, value, inner))
    depth, frontier, seen = 0, starts[inner[starts]], starts.size
    while frontier.size:  # breadth-first, all trees at once; a cycle would exceed the nodes
        frontier = left[frontier]
        frontier = np.concatenate((frontier, frontier + 1))
        depth, seen = depth + 1, seen + frontier.size
        if seen > left.size:
            raise MalformedModel("tree nodes are shared or cyclic")
        frontier = frontier[inner[frontier]]
    return depth, starts, feature.astype(np.int32), threshold, left, value
