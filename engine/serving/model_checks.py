"""Checks of an artifact against its registry index row, and the Booster's category
handling: feature names (order included), objective and class count, categorical features
and their categories.

A model whose artifact contradicts its row is refused (``ModelLoadError``: the host answers
503) rather than served with answers of the wrong kind or on misplaced columns.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from registry import ModelKey, ModelVersion
from registry.errors import ModelLoadError

__all__ = ["BINARY", "SELFCHECK_MEMO_LIMIT", "CategoryCodes", "Predictor", "SelfCheckMemo",
           "booster_objective", "category_codes", "checked_names", "checked_objective",
           "frame_predictor"]

Predictor = Callable[[np.ndarray], np.ndarray]
CategoryCodes = Mapping[int, Mapping[str, int]]  # column -> category -> its position
BINARY = "binary:logistic"
SELFCHECK_MEMO_LIMIT = 16_384  # sha256 hex strings remembered: ~2 MB at most


class SelfCheckMemo:
    """Artifacts (by sha256) whose compiled forest passed the self-check in this process,
    so a model evicted and loaded again skips it; bounded, the oldest forgotten first."""

    def __init__(self, limit: int = SELFCHECK_MEMO_LIMIT) -> None:
        self.limit = limit
        self._passed: dict[str, None] = {}
        self._lock = threading.Lock()  # loads run on a thread pool

    def __contains__(self, sha256: object) -> bool:
        return sha256 in self._passed

    def add(self, sha256: str) -> None:
        """Remember that the artifact with this sha256 passed."""
        with self._lock:
            self._passed[sha256] = None
            while len(self._passed) > self.limit:
                del self._passed[next(iter(self._passed))]


def booster_objective(booster: Any) -> tuple[str, int]:
    """A Booster's objective and class count (0 unless it predicts several classes)."""
    learner = json.loads(booster.save_config())["learner"]
    num_class = int(learner["learner_model_param"].get("num_class", "0"))
    return str(learner["objective"]["name"]), num_class if num_class > 1 else 0


def checked_objective(key: ModelKey, mv: ModelVersion, objective: str, num_class: int) -> None:
    """Refuse an artifact whose objective or class count contradicts the index row.

    A row that records ``binary:logistic`` may hold any one-output model (rows written
    before objectives were recorded read as binary); it may not hold a multi-class one.

    Raises:
        ModelLoadError: the index and the artifact disagree.
    """
    if mv.objective == objective or (mv.objective == BINARY and not num_class):
        if not num_class or mv.num_class in (None, num_class):
            return
        raise ModelLoadError(f"{key}: the registry index records {mv.num_class} classes, "
                             f"the artifact predicts {num_class}")
    raise ModelLoadError(f"{key}: the registry index records objective {mv.objective!r}, "
                         f"the artifact was trained with {objective!r}; refusing to serve "
                         "answers of the wrong kind")


def category_codes(key: ModelKey, mv: ModelVersion, booster: Any,
                    names: tuple[str, ...]) -> CategoryCodes:
    """Per categorical column, category -> code: the model's own categories (XGBoost 3.1+
    stores them), else those the index row's params record.

    Raises:
        ModelLoadError: the index and the artifact disagree on which features are
            categorical, or a categorical feature's categories are known to neither.
    """
    types = list(booster.feature_types or ())
    columns = [j for j, t in enumerate(types) if t == "c"]
    indexed = sorted(names.index(n) for n in mv.categorical if n in names)
    if mv.feature_types and indexed != columns:
        raise ModelLoadError(
            f"{key}: the registry index lists categorical features "
            f"({', '.join(names[j] for j in indexed) or 'none'}) but the artifact has "
            f"({', '.join(names[j] for j in columns) or 'none'})")
    if not columns:
        return {}
    own: dict[str, list[str]] = {}
    try:
        for name, values in booster.get_categories(export_to_arrow=True).to_arrow():
            if values is not None:
                own[str(name)] = [str(v) for v in values.to_pylist()]
    except Exception:  # noqa: BLE001 - a model saved before XGBoost stored categories
        own = {}
    codes: dict[int, Mapping[str, int]] = {}
    for j in columns:
        known = own.get(names[j]) or list(mv.categories.get(names[j], ()))
        if not known:
            raise ModelLoadError(f"{key}: no categories known for categorical feature "
                                 f"{names[j]!r} (neither the artifact nor the index has them)")
        codes[j] = {c: i for i, c in enumerate(known)}
    return codes


def frame_predictor(booster: Any, names: tuple[str, ...], codes: CategoryCodes) -> Predictor:
    """A predictor feeding the Booster a pandas frame: category dtype (over the model's own
    categories) for the categorical columns, whose codes the float matrix carries."""
    import pandas as pd  # only models with categorical features need it

    dtypes = {j: pd.CategoricalDtype(list(c)) for j, c in codes.items()}

    def predict(x: np.ndarray) -> np.ndarray:
        cols: dict[str, Any] = {}
        for j, name in enumerate(names):
            if j in dtypes:
                code = np.where(np.isnan(x[:, j]), -1, x[:, j]).astype(np.int64)
                cols[name] = pd.Categorical.from_codes(code, dtype=dtypes[j])
            else:
                cols[name] = x[:, j]
        return booster.inplace_predict(pd.DataFrame(cols), validate_features=False)

    return predict


def checked_names(key: ModelKey, indexed: tuple[str, ...], stored: tuple[str, ...],
                   width: int) -> tuple[str, ...]:
    """The feature names to serve with: the index's, which must match the artifact's.

    Raises:
        ModelLoadError: the index and the artifact disagree on the names, their order or
            their count.
    """
    if indexed and stored and indexed != stored:
        what = ("lists the features in the order" if sorted(indexed) == sorted(stored)
                else "lists the features")
        raise ModelLoadError(f"{key}: the registry index {what} ({', '.join(indexed)}) but "
                             f"the artifact was trained on ({', '.join(stored)}); refusing "
                             f"to serve it rather than predict on misplaced columns")
    names = indexed or stored or tuple(f"f{i}" for i in range(width))
    if len(names) != width:
        raise ModelLoadError(f"{key}: index lists {len(names)} features, the model "
                             f"uses {width}")
    return names
