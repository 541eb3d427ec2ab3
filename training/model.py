"""Training and scoring one tenant's model: pure functions, no Ray, no registry.

A tenant's rows for the window are split by time (:mod:`training.frame`): by default the
run's own date is the holdout and the days before it are the training set. Both the new
model and the current production model are scored on that holdout, which neither has seen.
Objectives: ``binary:logistic`` (AUC, logloss), ``reg:squarederror`` (RMSE, MAE) and
``multi:softprob`` (mlogloss, merror); the metric functions live in :mod:`training.metrics`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from registry.types import ModelProfile
from training.checks import ArtifactCheck, run_artifact_checks
from training.metrics import auc_score, log_loss, mae, merror, mlogloss, rmse
from training.profile import model_profile
from training.settings import TrainingSettings

__all__ = [
    "BINARY",
    "MULTICLASS",
    "REGRESSION",
    "HoldoutScore",
    "ModelSpec",
    "SkipReason",
    "TenantSkipped",
    "TrainedModel",
    "auc_score",
    "check_trainable",
    "holdout_score",
    "log_loss",
    "score",
    "tenant_seed",
    "train_tenant",
]


BINARY = "binary:logistic"
REGRESSION = "reg:squarederror"
MULTICLASS = "multi:softprob"
_EVAL_METRIC = {BINARY: "logloss", REGRESSION: "rmse", MULTICLASS: "mlogloss"}


class SkipReason(str, Enum):
    """Why a tenant got no new model."""

    TOO_FEW_ROWS = "too_few_rows"
    ONE_CLASS = "one_class"
    HOLDOUT_UNUSABLE = "holdout_unusable"
    INVALID_LABEL = "invalid_label"
    NO_FEATURES = "no_features"
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
    objective: str = BINARY
    num_class: int = 0
    """Classes of a ``multi:softprob`` model (labels 0..num_class-1); 0 otherwise."""
    tree_method: str = "hist"
    nthread: int = 1
    params: tuple[tuple[str, Any], ...] = ()
    """Further XGBoost booster parameters, passed through."""

    @classmethod
    def from_settings(cls, s: TrainingSettings) -> ModelSpec:
        """The spec the settings describe."""
        return cls(n_estimators=s.n_estimators, max_depth=s.max_depth,
                   learning_rate=s.learning_rate, seed=s.seed,
                   min_train_rows=s.min_train_rows, min_holdout_rows=s.min_holdout_rows)

    def xgb_params(self, seed: int) -> dict[str, Any]:
        """Booster parameters for one tenant (single-threaded: parallelism is across tenants)."""
        params: dict[str, Any] = {
            "objective": self.objective, "eval_metric": _EVAL_METRIC[self.objective],
            "tree_method": self.tree_method, "max_depth": self.max_depth,
            "eta": self.learning_rate, "nthread": self.nthread, "seed": seed, "verbosity": 0}
        if self.objective == MULTICLASS:
            params["num_class"] = self.num_class
        params.update(dict(self.params))
        return params


@dataclass(frozen=True)
class HoldoutScore:
    """A model's metrics on a holdout (those of its objective; the others are None)."""

    auc: float | None = None
    logloss: float | None = None
    rmse: float | None = None
    mae: float | None = None
    mlogloss: float | None = None
    merror: float | None = None

    def as_dict(self) -> dict[str, float]:
        """The metrics that are set."""
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def value(self, metric: str) -> float | None:
        """One metric by name (None when this score does not have it)."""
        return self.as_dict().get(metric)


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
    objective: str = BINARY
    feature_names: tuple[str, ...] = ()
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    profile: ModelProfile | None = None
    """Reference profile for drift monitoring (training features, holdout scores)."""
    checks: dict[str, str | None] = field(default_factory=dict)
    """Index columns the artifact checks recorded (:mod:`training.checks`)."""
    files: dict[str, bytes] = field(default_factory=dict, repr=False)
    """Files the artifact checks wrote, staged beside the artifact."""

    def metrics(self) -> dict[str, float]:
        """Metrics recorded with the version: the holdout metrics of the objective, rows,
        and the label mean (``base_rate`` for binary, ``label_mean`` for regression)."""
        out = dict(self.holdout.as_dict())
        out.update({"n_train": float(self.n_train), "n_holdout": float(self.n_holdout),
                    "rows": float(self.n_train + self.n_holdout)})
        if self.objective == BINARY:
            out.update(base_rate=self.base_rate, holdout_base_rate=self.holdout_base_rate)
        elif self.objective == REGRESSION:
            out.update(label_mean=self.base_rate, holdout_label_mean=self.holdout_base_rate)
        return out


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
        spec: thresholds and objective.

    Raises:
        TenantSkipped: too few training rows; labels the objective cannot take (not 0/1,
            not a class id below ``num_class``, not finite); one class in training
            (classifiers); a holdout with too few rows, or one class for binary (AUC would
            be undefined).
    """
    if len(y_train) < spec.min_train_rows:
        raise TenantSkipped(SkipReason.TOO_FEW_ROWS,
                            f"{len(y_train)} training rows < {spec.min_train_rows}")
    _check_labels(np.concatenate([y_train, y_holdout]), spec)
    if spec.objective != REGRESSION:
        classes = np.unique(y_train)
        if len(classes) == 1:
            raise TenantSkipped(SkipReason.ONE_CLASS,
                                f"all {len(y_train)} training labels are {int(y_train[0])}")
    if spec.objective == BINARY:
        h_pos = int(np.sum(y_holdout))
        if len(y_holdout) < spec.min_holdout_rows or h_pos in (0, len(y_holdout)):
            raise TenantSkipped(SkipReason.HOLDOUT_UNUSABLE,
                                f"holdout has {len(y_holdout)} rows, {h_pos} positive "
                                f"(need >= {spec.min_holdout_rows} rows and both classes)")
    elif len(y_holdout) < spec.min_holdout_rows:
        raise TenantSkipped(SkipReason.HOLDOUT_UNUSABLE,
                            f"holdout has {len(y_holdout)} rows "
                            f"(need >= {spec.min_holdout_rows})")


def _check_labels(y: np.ndarray, spec: ModelSpec) -> None:
    if spec.objective == REGRESSION:
        bad = y[~np.isfinite(y)]
        what = "not a finite number"
    else:
        top = 2 if spec.objective == BINARY else spec.num_class
        bad = y[(y != np.round(y)) | (y < 0) | (y >= top)]
        what = "not 0 or 1" if spec.objective == BINARY else f"not a class id 0..{top - 1}"
    if bad.size:
        raise TenantSkipped(SkipReason.INVALID_LABEL,
                            f"{bad.size} labels are {what} (e.g. {float(bad[0]):g})")


def score(booster: Any, x: Any, y: np.ndarray, objective: str = BINARY) -> HoldoutScore:
    """The objective's metrics of ``booster`` on ``(x, y)``.

    Args:
        booster: an ``xgboost.Booster``.
        x: features in the booster's feature order: float64 (NaN = missing), or a pandas
            DataFrame with category columns.
        y: labels (binary: both classes present).
        objective: the XGBoost objective the booster was trained with.

    Returns:
        The :class:`HoldoutScore`: auc/logloss, rmse/mae or mlogloss/merror.
    """
    return holdout_score(booster.inplace_predict(x), y, objective)


def holdout_score(p: np.ndarray, y: np.ndarray, objective: str = BINARY) -> HoldoutScore:
    """The objective's metrics of predictions ``p`` against labels ``y`` (see :func:`score`)."""
    if objective == REGRESSION:
        return HoldoutScore(rmse=rmse(y, p), mae=mae(y, p))
    if objective == MULTICLASS:
        return HoldoutScore(mlogloss=mlogloss(y, p), merror=merror(y, p))
    return HoldoutScore(auc=auc_score(y, p), logloss=log_loss(y, p))


def train_tenant(tenant_id: str, feature_names: tuple[str, ...], x_train: Any,
                 y_train: np.ndarray, x_holdout: Any, y_holdout: np.ndarray,
                 spec: ModelSpec, checks: Sequence[ArtifactCheck] = ()) -> TrainedModel:
    """Train one tenant's model, score it on its holdout and run ``checks`` on its artifact.

    Args:
        tenant_id: the tenant (seeds the model).
        feature_names: names stored in the model, one per column.
        x_train: training features: float64 with NaN for missing, or a pandas DataFrame
            whose category columns are trained with XGBoost's native categorical support.
        y_train: training labels.
        x_holdout: holdout features, like ``x_train``.
        y_holdout: holdout labels.
        spec: objective, hyper-parameters and thresholds.
        checks: artifact checks, given the UBJSON bytes and the trained Booster.

    Returns:
        The :class:`TrainedModel`.

    Raises:
        TenantSkipped: the data cannot give an evaluable model (see :func:`check_trainable`).
    """
    import xgboost as xgb

    check_trainable(y_train, y_holdout, spec)
    if not feature_names:
        raise TenantSkipped(SkipReason.NO_FEATURES, "no feature has a value in training rows")
    seed = tenant_seed(tenant_id, spec.seed)
    params = spec.xgb_params(seed)
    categories: dict[str, tuple[str, ...]] = {}
    if isinstance(x_train, np.ndarray):
        dtrain = xgb.DMatrix(x_train, label=y_train, feature_names=list(feature_names),
                             nthread=1)
    else:
        categories = {str(c): tuple(x_train[c].cat.categories) for c in x_train.columns
                      if str(x_train[c].dtype) == "category"}
        dtrain = xgb.DMatrix(x_train, label=y_train, enable_categorical=True, nthread=1)
    booster = xgb.train(params, dtrain, num_boost_round=spec.n_estimators)
    p_holdout = booster.inplace_predict(x_holdout)
    model_bytes = bytes(booster.save_raw("ubj"))
    checked = run_artifact_checks(checks, model_bytes, booster)
    return TrainedModel(
        model_bytes=model_bytes,
        holdout=holdout_score(p_holdout, y_holdout, spec.objective),
        n_train=len(y_train), n_holdout=len(y_holdout),
        base_rate=float(np.mean(y_train)), holdout_base_rate=float(np.mean(y_holdout)),
        seed=seed, params={**params, "n_estimators": spec.n_estimators},
        objective=spec.objective, feature_names=tuple(feature_names), categories=categories,
        profile=model_profile(feature_names, x_train, p_holdout),
        checks=checked.columns, files=checked.files,
    )
