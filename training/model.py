"""Training and scoring one tenant's model: pure functions, no Ray, no registry.

A tenant's rows for the window are split by time: the run's own date is the holdout, the
days before it are the training set. Both the new model and the current production model
are scored on that holdout, which neither has seen.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from training.settings import TrainingSettings

__all__ = [
    "HoldoutScore",
    "ModelSpec",
    "SkipReason",
    "TenantSkipped",
    "TrainedModel",
    "auc_score",
    "check_trainable",
    "log_loss",
    "score",
    "tenant_seed",
    "train_tenant",
]


class SkipReason(str, Enum):
    """Why a tenant got no new model."""

    TOO_FEW_ROWS = "too_few_rows"
    ONE_CLASS = "one_class"
    HOLDOUT_UNUSABLE = "holdout_unusable"
    ERROR = "error"


class TenantSkipped(Exception):
    """A tenant's data cannot produce an evaluable model (not an error of the job)."""

    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ModelSpec:
    """The XGBoost hyper-parameters and data thresholds every tenant is trained with."""

    n_estimators: int = 50
    max_depth: int = 5
    learning_rate: float = 0.3
    seed: int = 0
    min_train_rows: int = 50
    min_holdout_rows: int = 10

    @classmethod
    def from_settings(cls, s: TrainingSettings) -> ModelSpec:
        """The spec the settings describe."""
        return cls(n_estimators=s.n_estimators, max_depth=s.max_depth,
                   learning_rate=s.learning_rate, seed=s.seed,
                   min_train_rows=s.min_train_rows, min_holdout_rows=s.min_holdout_rows)

    def xgb_params(self, seed: int) -> dict[str, Any]:
        """Booster parameters for one tenant (single-threaded: parallelism is across tenants)."""
        return {"objective": "binary:logistic", "eval_metric": "logloss", "tree_method": "hist",
                "max_depth": self.max_depth, "eta": self.learning_rate, "nthread": 1,
                "seed": seed, "verbosity": 0}


@dataclass(frozen=True)
class HoldoutScore:
    """A model's metrics on a holdout."""

    auc: float
    logloss: float


@dataclass(frozen=True)
class TrainedModel:
    """A trained tenant model: UBJSON bytes plus what the registry records about it."""

    model_bytes: bytes
    holdout: HoldoutScore
    n_train: int
    n_holdout: int
    base_rate: float
    holdout_base_rate: float
    seed: int
    params: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Metrics recorded with the version (holdout AUC/logloss, rows, base rates)."""
        return {"auc": self.holdout.auc, "logloss": self.holdout.logloss,
                "n_train": float(self.n_train), "n_holdout": float(self.n_holdout),
                "rows": float(self.n_train + self.n_holdout), "base_rate": self.base_rate,
                "holdout_base_rate": self.holdout_base_rate}


def tenant_seed(tenant_id: str, base_seed: int = 0) -> int:
    """A stable 31-bit seed from the tenant id and a global seed (same on every machine).

    Args:
        tenant_id: the tenant.
        base_seed: the job-wide seed.

    Returns:
        An int in ``[0, 2**31)``.
    """
    digest = hashlib.blake2b(f"{base_seed}:{tenant_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (2 ** 31)


def check_trainable(y_train: np.ndarray, y_holdout: np.ndarray, spec: ModelSpec) -> None:
    """Raise :class:`TenantSkipped` unless the data can give an evaluable model.

    Args:
        y_train: training labels.
        y_holdout: holdout labels.
        spec: thresholds.

    Raises:
        TenantSkipped: too few training rows, one class in training, or a holdout with too
            few rows or one class (AUC would be undefined).
    """
    if len(y_train) < spec.min_train_rows:
        raise TenantSkipped(SkipReason.TOO_FEW_ROWS,
                            f"{len(y_train)} training rows < {spec.min_train_rows}")
    positives = int(np.sum(y_train))
    if positives in (0, len(y_train)):
        raise TenantSkipped(SkipReason.ONE_CLASS,
                            f"all {len(y_train)} training labels are {int(y_train[0])}")
    h_pos = int(np.sum(y_holdout))
    if len(y_holdout) < spec.min_holdout_rows or h_pos in (0, len(y_holdout)):
        raise TenantSkipped(SkipReason.HOLDOUT_UNUSABLE,
                            f"holdout has {len(y_holdout)} rows, {h_pos} positive "
                            f"(need >= {spec.min_holdout_rows} rows and both classes)")


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


def score(booster: Any, x: np.ndarray, y: np.ndarray) -> HoldoutScore:
    """AUC and logloss of ``booster`` on ``(x, y)``.

    Args:
        booster: an ``xgboost.Booster``.
        x: features, float64, NaN = missing, columns in the booster's feature order.
        y: labels with both classes present.

    Returns:
        The :class:`HoldoutScore`.
    """
    p = booster.inplace_predict(x)
    return HoldoutScore(auc=auc_score(y, p), logloss=log_loss(y, p))


def train_tenant(tenant_id: str, feature_names: tuple[str, ...], x_train: np.ndarray,
                 y_train: np.ndarray, x_holdout: np.ndarray, y_holdout: np.ndarray,
                 spec: ModelSpec) -> TrainedModel:
    """Train one tenant's binary classifier and score it on its holdout.

    Args:
        tenant_id: the tenant (seeds the model).
        feature_names: names stored in the model, one per column.
        x_train: training features, float64 with NaN for missing.
        y_train: training labels, 0/1.
        x_holdout: holdout features.
        y_holdout: holdout labels.
        spec: hyper-parameters and thresholds.

    Returns:
        The :class:`TrainedModel`.

    Raises:
        TenantSkipped: the data cannot give an evaluable model (see :func:`check_trainable`).
    """
    import xgboost as xgb

    check_trainable(y_train, y_holdout, spec)
    seed = tenant_seed(tenant_id, spec.seed)
    params = spec.xgb_params(seed)
    dtrain = xgb.DMatrix(x_train, label=y_train, feature_names=list(feature_names), nthread=1)
    booster = xgb.train(params, dtrain, num_boost_round=spec.n_estimators)
    return TrainedModel(
        model_bytes=bytes(booster.save_raw("ubj")),
        holdout=score(booster, x_holdout, y_holdout),
        n_train=len(y_train), n_holdout=len(y_holdout),
        base_rate=float(np.mean(y_train)), holdout_base_rate=float(np.mean(y_holdout)),
        seed=seed, params={**params, "n_estimators": spec.n_estimators},
    )
