"""A version's reference profile: what its training rows and holdout scores look like.

Made in the training task, where a tenant's rows and its new model are at hand, and
published with the version (the registry's ``profiles`` table). Per feature: quantile bin
edges of the training rows (:data:`N_BINS` bins), the share of the non-missing values in
each bin and the missing rate; for the score: the same of the model's holdout scores.
The drift monitor (:mod:`engine.monitor`) bins production rows with the same edges.

Values are binned as served: rounded to float32 first (a host predicts on float32), so a
value sent exactly as it was in training lands in the same bin. Categorical features are
binned by their category code, which is also what a client sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from registry.types import BinnedDistribution, ModelProfile

__all__ = ["N_BINS", "SCORE", "bin_counts", "distribution", "feature_matrix", "model_profile",
           "quantile_edges", "score_values"]

N_BINS = 10
SCORE = "score"
"""The name of the score's distribution."""


def as_served(values: np.ndarray) -> np.ndarray:
    """``values`` rounded to float32 as a model host holds them, as float64."""
    return np.asarray(values, dtype=np.float64).astype(np.float32).astype(np.float64)


def _edges(present: np.ndarray, bins: int) -> np.ndarray:
    """Inner quantile edges of sorted non-missing values (numpy's default, linear)."""
    n = len(present)
    if not n:
        return np.empty(0)
    h = (n - 1) * np.arange(1, bins) / bins
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    return np.unique(as_served(present[lo] + (h - lo) * (present[hi] - present[lo])))


def _summary(name: str, present: np.ndarray, total: int, bins: int) -> BinnedDistribution:
    """A distribution from its sorted non-missing values and the count of all values."""
    edges = _edges(present, bins)
    # Right-closed bins: the values <= each edge, from the sorted values in one search.
    at_or_below = np.searchsorted(present, edges, side="right")
    counts = np.diff(np.concatenate([[0], at_or_below, [len(present)]]))
    n = len(present)
    shares = counts / n if n else np.zeros(len(counts))
    return BinnedDistribution(name, tuple(float(e) for e in edges),
                              tuple(float(x) for x in shares),
                              (total - n) / total if total else 0.0, n)


def quantile_edges(values: np.ndarray, bins: int = N_BINS) -> np.ndarray:
    """The inner edges of ``bins`` quantile bins of the non-missing ``values``.

    Args:
        values: float values, NaN = missing.
        bins: bins wanted.

    Returns:
        Strictly ascending edges (at most ``bins - 1``; fewer when values repeat, e.g. a
        0/1 feature gets one or two); empty when nothing is present.
    """
    v = as_served(values)
    return _edges(np.sort(v[~np.isnan(v)]), bins)


def bin_counts(values: np.ndarray, edges: Sequence[float] | np.ndarray) -> tuple[np.ndarray, int]:
    """How many of ``values`` fall in each bin of ``edges``, and how many are missing.

    Bins are right-closed: bin ``i`` holds ``edges[i-1] < v <= edges[i]``.

    Args:
        values: float values, NaN = missing.
        edges: inner edges, ascending.

    Returns:
        ``(counts, missing)``: ``len(edges) + 1`` counts of the non-missing values.
    """
    v = as_served(values)
    missing = np.isnan(v)
    e = np.asarray(edges, dtype=np.float64)
    idx = np.searchsorted(e, v[~missing], side="left")
    return np.bincount(idx, minlength=len(e) + 1), int(missing.sum())


def distribution(name: str, values: np.ndarray, bins: int = N_BINS) -> BinnedDistribution:
    """``values`` summarised in quantile bins of their own.

    Args:
        name: what the values are (a feature name, or :data:`SCORE`).
        values: float values, NaN = missing.
        bins: bins wanted.

    Returns:
        The :class:`~registry.types.BinnedDistribution`.
    """
    v = as_served(np.asarray(values, dtype=np.float64).ravel())
    return _summary(name, np.sort(v[~np.isnan(v)]), len(v), bins)


def score_values(predictions: np.ndarray) -> np.ndarray:
    """One score per row: the prediction itself, or the highest class probability of a
    multiclass model (one column per class)."""
    p = np.asarray(predictions, dtype=np.float64)
    return p.max(axis=1) if p.ndim == 2 else p.ravel()


def feature_matrix(x: Any) -> np.ndarray:
    """Model input as a float64 matrix: an ndarray as is; a pandas frame's category columns
    as their codes (NaN for a missing or unknown category)."""
    if isinstance(x, np.ndarray):
        return np.asarray(x, dtype=np.float64)
    cols = []
    for name in x.columns:
        col = x[name]
        if str(col.dtype) == "category":
            codes = col.cat.codes.to_numpy().astype(np.float64)
            codes[codes < 0] = np.nan
            cols.append(codes)
        else:
            cols.append(col.to_numpy(dtype=np.float64, na_value=np.nan))
    return np.column_stack(cols) if cols else np.empty((len(x), 0))


def model_profile(feature_names: Sequence[str], x_train: Any, holdout_predictions: np.ndarray,
                  bins: int = N_BINS) -> ModelProfile:
    """The reference profile of a model.

    Args:
        feature_names: the model's features, in model order.
        x_train: its training rows (ndarray or pandas frame, as trained on).
        holdout_predictions: its predictions on the holdout.
        bins: bins per distribution.

    Returns:
        The :class:`~registry.types.ModelProfile`.
    """
    x = as_served(feature_matrix(x_train))
    ordered = np.sort(x, axis=0)  # one sort for every column; NaN sorts last
    present = (~np.isnan(x)).sum(axis=0)
    features = tuple(_summary(name, ordered[:present[j], j], len(x), bins)
                     for j, name in enumerate(feature_names))
    return ModelProfile(features, distribution(SCORE, score_values(holdout_predictions), bins))
