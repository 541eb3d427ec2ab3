"""Holdout metrics of every objective, in numpy (equal to scikit-learn's to 1e-12).

Binary: :func:`auc_score`, :func:`log_loss`; regression: :func:`rmse`, :func:`mae`;
multiclass: :func:`mlogloss`, :func:`merror`. The gate compares one of them
(:data:`HIGHER_IS_BETTER` says which way is better).
"""

from __future__ import annotations

import numpy as np

__all__ = ["HIGHER_IS_BETTER", "auc_score", "log_loss", "mae", "merror", "mlogloss", "rmse"]

HIGHER_IS_BETTER: frozenset[str] = frozenset({"auc"})
"""Metrics where a larger value is better; for every other one, lower is better."""


def auc_score(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney U with average ranks for ties); equals sklearn's roc_auc_score.

    Args:
        y: 0/1 labels with both classes present.
        p: scores.

    Returns:
        The AUC in ``[0, 1]``.

    Raises:
        ValueError: only one class in ``y``.
    """
    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC is undefined with one class")
    _, inverse, counts = np.unique(np.asarray(p, dtype=np.float64), return_inverse=True,
                                   return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based mean rank of each tie group
    rank_sum = float(avg_rank[inverse][y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def log_loss(y: np.ndarray, p: np.ndarray, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy with probabilities clipped to ``[eps, 1 - eps]``.

    Args:
        y: 0/1 labels.
        p: predicted probabilities of class 1.
        eps: clipping bound.

    Returns:
        The log loss.
    """
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def rmse(y: np.ndarray, p: np.ndarray) -> float:
    """Root mean squared error.

    Args:
        y: targets.
        p: predictions.

    Returns:
        The RMSE.
    """
    d = np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    return float(np.sqrt(np.mean(d * d)))


def mae(y: np.ndarray, p: np.ndarray) -> float:
    """Mean absolute error.

    Args:
        y: targets.
        p: predictions.

    Returns:
        The MAE.
    """
    return float(np.mean(np.abs(np.asarray(p, np.float64) - np.asarray(y, np.float64))))


def mlogloss(y: np.ndarray, p: np.ndarray, eps: float = 1e-15) -> float:
    """Multiclass cross-entropy: mean of ``-log p[true class]``, probabilities clipped.

    Args:
        y: class ids ``0..K-1``.
        p: ``(n, K)`` class probabilities (rows sum to 1).
        eps: clipping bound.

    Returns:
        The log loss (sklearn's ``log_loss`` with ``labels=range(K)``).
    """
    p = np.asarray(p, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    picked = np.clip(p[np.arange(len(p)), np.asarray(y, dtype=np.int64)], eps, 1 - eps)
    return float(-np.mean(np.log(picked)))


def merror(y: np.ndarray, p: np.ndarray) -> float:
    """Multiclass error rate: the share of rows whose most probable class is wrong.

    Args:
        y: class ids.
        p: ``(n, K)`` class probabilities.

    Returns:
        The error rate in ``[0, 1]``.
    """
    return float(np.mean(np.argmax(np.asarray(p), axis=1) != np.asarray(y, dtype=np.int64)))
