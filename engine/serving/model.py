"""A model loaded for serving: its predictor, feature names and memory footprint.

Most artifacts compile to a :class:`~engine.forest.CompiledForest` (flat numpy
arrays walked per request: ~25 us for one row instead of ~200 us in
``Booster.inplace_predict``, a third of the memory, and an exact footprint). Models the
forest does not handle (dart, multi-class, categorical splits, …) fall back to an
``xgboost.Booster``, and so does a forest whose predictions on 8 probe rows differ from
the Booster's by more than 1e-6 (the self-check). The training job runs that check once,
at publish time (:func:`publish_check`, registered by ``engine.cli``), and the index row
records it (``forest_check`` = :data:`~engine.forest.FOREST_VERSION`); a load
checks only versions without that record (older rows, another compiler version, a
failed check). A load also refuses an
artifact whose feature names differ from the index's, order included, and one whose
objective or categorical features contradict the index row's.

Predictions are ``(rows,)`` for one-output objectives (binary: probabilities, regression:
values) and ``(rows, K)`` class probabilities for ``multi:softprob``. A categorical
feature travels in the float32 request matrix as its category's position in the model's
category list (NaN: missing or a category the model never saw); the Booster gets those
columns as a pandas frame with category dtype over the model's own categories.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.forest import (
    FOREST_VERSION,
    CompiledForest,
    ForestUnsupported,
    compile_forest,
    probe_rows,
)
from engine.forest.saved import SAVED_NAME, SavedForestInvalid, dump_forest, load_saved_forest
from engine.serving.model_checks import (
    BINARY,
    CategoryCodes,
    Predictor,
    SelfCheckMemo,
    booster_objective,
    category_codes,
    checked_names,
    checked_objective,
    frame_predictor,
)
from registry import ModelKey, ModelVersion, Registry
from registry.errors import ModelLoadError
from registry.registry import booster_from_bytes
from training.checks import CheckResult

__all__ = [
    "FOOTPRINT_FIXED_BYTES", "FOOTPRINT_PER_ARTIFACT_BYTE", "MULTICLASS", "SELFCHECK_TOLERANCE",
    "LoadedModel", "SelfCheckMemo", "load_model", "load_models", "publish_check",
]

# Resident memory of a loaded Booster per byte of its UBJSON artifact, measured on this
# kind of machine over 500 boosters of 50 trees x depth 5 (RSS delta / artifact bytes:
# 100.3 KB / 81.5 KB = 1.23); `tenantry loadtest --footprint` re-measures it per model.
FOOTPRINT_PER_ARTIFACT_BYTE = 1.25
FOOTPRINT_FIXED_BYTES = 4096  # Python objects around the arrays / booster
SELFCHECK_ROWS = 8
SELFCHECK_TOLERANCE = 1e-6

log = logging.getLogger(__name__)

MULTICLASS = "multi:softprob"


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """One tenant's model at one version, ready to predict."""

    key: ModelKey
    version: ModelVersion
    predictor: Predictor
    feature_names: tuple[str, ...]
    nbytes: int
    engine: str  # "forest" or "xgboost"
    index: Mapping[str, int] = field(default_factory=dict)
    selfcheck_fallback: bool = False  # a compiled forest failed its self-check: Booster serves
    objective: str = BINARY  # the artifact's objective
    num_class: int = 0  # classes of a multi:softprob model (predict gives (rows, num_class))
    category_codes: CategoryCodes = field(default_factory=dict)
    """Per categorical column (model order), category -> its code (the position in the
    model's category list, in that order); empty when every feature is a float."""

    @property
    def n_features(self) -> int:
        """Width of a feature row."""
        return len(self.feature_names)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions for each row of ``x`` (float32, NaN = missing; categorical columns
        hold category codes): ``(rows,)``, or ``(rows, num_class)`` for multi:softprob."""
        return self.predictor(x)


def load_model(registry: Registry, mv: ModelVersion,
               selfchecked: SelfCheckMemo | None = None) -> LoadedModel:
    """Read, verify (sha256), check and load ``mv``; blocking, run it off the event loop.

    The index's feature names must equal the artifact's, in order (a model trained on
    another column order would answer wrong numbers). A compiled forest is served only if
    it predicts like XGBoost on :func:`~engine.forest.probe_rows`: checked here
    unless the index row says this compiler checked it at publish time
    (``mv.forest_check == FOREST_VERSION``; the sha256 check ties the row to these bytes)
    or its artifact is in ``selfchecked`` (which then remembers it); otherwise the Booster
    serves and the model says so (``selfcheck_fallback``).

    Args:
        registry: where the artifact is read from.
        mv: the version to load.
        selfchecked: artifacts already self-checked in this process (None: check).

    Raises:
        ChecksumMismatch: the artifact's bytes do not match the index.
        ModelLoadError: missing artifact, not a valid XGBoost model, or feature names,
            objective, class count or categorical features that disagree with the index.
    """
    return _load(registry, mv, selfchecked, {})


def load_models(registry: Registry, versions: Sequence[ModelVersion],
                selfchecked: SelfCheckMemo | None = None) -> list[LoadedModel | Exception]:
    """:func:`load_model` of each version, in order, for a batch job's bucket.

    Each version is read, verified and checked exactly as :func:`load_model` does it; its
    refusal (the exception ``load_model`` would raise) takes its place in the answer, so
    one bad artifact does not stop the others. Models sharing a feature list share one
    column index.

    Args:
        registry: where the artifacts are read from.
        versions: the versions to load.
        selfchecked: artifacts already self-checked in this process (None: check).

    Returns:
        Per version, its :class:`LoadedModel` or the exception that refused it.
    """
    indexes: dict[tuple[str, ...], Mapping[str, int]] = {}
    out: list[LoadedModel | Exception] = []
    for mv in versions:
        try:
            out.append(_load(registry, mv, selfchecked, indexes))
        except Exception as exc:  # noqa: BLE001 - the caller records each version's refusal
            out.append(exc)
    return out


def _load(registry: Registry, mv: ModelVersion, selfchecked: SelfCheckMemo | None,
          indexes: dict[tuple[str, ...], Mapping[str, int]]) -> LoadedModel:
    """:func:`load_model`; ``indexes`` keeps the column index of each feature list seen."""
    data = registry.read_artifact(mv)
    key = ModelKey(mv.tenant_id, mv.version)
    if mv.forest_check == FOREST_VERSION:  # checked at publish: its compiled form is saved
        saved = _saved_forest(registry, mv)
        if saved is not None:
            return _forest_model(key, mv, saved, _forest_names(key, mv, saved), indexes)
    try:
        forest: CompiledForest | None = compile_forest(data)
    except ForestUnsupported:
        forest = None
    if forest is not None:
        names = _forest_names(key, mv, forest)
        if mv.forest_check == FOREST_VERSION or (selfchecked is not None
                                                 and mv.sha256 in selfchecked):
            return _forest_model(key, mv, forest, names, indexes)
    booster = booster_from_bytes(data, str(key))
    if forest is not None:
        diff = _selfcheck(forest, booster)
        if diff is None:
            if selfchecked is not None:
                selfchecked.add(mv.sha256)
            return _forest_model(key, mv, forest, names, indexes)
        log.warning("%s: compiled forest differs from XGBoost by %s on the self-check rows; "
                    "serving it with the XGBoost Booster", key, diff)
        return _booster_model(key, mv, booster, names, (forest.objective, 0), {}, fallback=True)
    names = checked_names(key, tuple(mv.feature_names), tuple(booster.feature_names or ()),
                          booster.num_features())
    objective, num_class = booster_objective(booster)
    checked_objective(key, mv, objective, num_class)
    return _booster_model(key, mv, booster, names, (objective, num_class),
                          category_codes(key, mv, booster, names), fallback=False)


def _saved_forest(registry: Registry, mv: ModelVersion) -> CompiledForest | None:
    """The forest the training job saved beside the artifact, or None (compile it then)."""
    data = registry.read_companion(mv, SAVED_NAME)
    if data is None:
        return None
    try:
        return load_saved_forest(data, mv.sha256)
    except SavedForestInvalid as exc:
        log.warning("%s@v%s: saved forest not used, compiling the artifact: %s",
                    mv.tenant_id, mv.version, exc)
        return None


def _forest_names(key: ModelKey, mv: ModelVersion, forest: CompiledForest) -> tuple[str, ...]:
    """The feature names to serve a compiled forest with, once its artifact agrees with the
    index row (names, objective; a forest has numerical splits only)."""
    names = checked_names(key, tuple(mv.feature_names),
                          forest.feature_names if forest.names_stored else (), forest.n_features)
    checked_objective(key, mv, forest.objective, 0)
    if mv.categorical:
        raise ModelLoadError(f"{key}: the registry index lists categorical features "
                             f"({', '.join(sorted(mv.categorical))}) but the artifact "
                             "has none")
    return names


def _booster_model(key: ModelKey, mv: ModelVersion, booster: Any, names: tuple[str, ...],
                   kind: tuple[str, int], codes: CategoryCodes, *, fallback: bool
                   ) -> LoadedModel:
    """A model served by its XGBoost Booster (``kind``: objective and class count)."""
    if codes:
        predict = frame_predictor(booster, names, codes)
    else:
        def predict(x: np.ndarray) -> np.ndarray:
            return booster.inplace_predict(x, validate_features=False)

    nbytes = int(mv.size_bytes * FOOTPRINT_PER_ARTIFACT_BYTE) + FOOTPRINT_FIXED_BYTES
    return LoadedModel(key, mv, predict, names, nbytes, "xgboost",
                       {n: i for i, n in enumerate(names)}, fallback, kind[0], kind[1], codes)


def publish_check(data: bytes, booster: Any) -> CheckResult:
    """The publish-time self-check: a ``training.checks`` artifact check.

    Args:
        data: the artifact's UBJSON bytes.
        booster: the ``xgboost.Booster`` they were saved from.

    Returns:
        Column ``forest_check`` = :data:`~engine.forest.FOREST_VERSION` and the compiled
        forest saved as file :data:`~engine.forest.saved.SAVED_NAME` when ``data``
        compiles to a forest that predicts like ``booster`` on the probe rows; else
        ``forest_check`` None and no file (a model the forest does not handle, or one that
        differs: :func:`load_model` checks those itself).
    """
    unchecked = CheckResult({"forest_check": None})
    try:
        forest = compile_forest(data)
    except ForestUnsupported:
        return unchecked
    diff = _selfcheck(forest, booster)
    if diff is not None:
        log.warning("compiled forest differs from XGBoost by %s on the self-check rows at "
                    "publish; recorded unchecked", diff)
        return unchecked
    return CheckResult({"forest_check": FOREST_VERSION},
                       {SAVED_NAME: dump_forest(forest, hashlib.sha256(data).hexdigest())})


def _forest_model(key: ModelKey, mv: ModelVersion, forest: CompiledForest,
                  names: tuple[str, ...],
                  indexes: dict[tuple[str, ...], Mapping[str, int]]) -> LoadedModel:
    index = indexes.get(names)
    if index is None:
        index = indexes[names] = {n: i for i, n in enumerate(names)}
    return LoadedModel(key, mv, forest.predict, names, forest.nbytes + FOOTPRINT_FIXED_BYTES,
                       "forest", index, objective=forest.objective)


def _selfcheck(forest: CompiledForest, booster: Any) -> float | None:
    """None when ``forest`` predicts like ``booster`` on the probe rows, else the largest
    difference seen (NaN if either side produced one).

    Probabilities must agree to ``SELFCHECK_TOLERANCE``; raw (identity) outputs to that
    much relative to their magnitude (float32 spacing grows with it)."""
    x = probe_rows(forest, SELFCHECK_ROWS)
    want = np.asarray(booster.inplace_predict(x, validate_features=False), dtype=np.float64)
    got = np.asarray(forest.predict(x), dtype=np.float64)
    if got.shape != want.shape:
        return float("nan")
    diff = np.abs(got - want)
    scale = 1.0 if forest.sigmoid else np.maximum(1.0, np.abs(want))
    if bool(np.all(diff <= SELFCHECK_TOLERANCE * scale)):
        return None
    return float(np.nanmax(diff)) if not np.isnan(diff).all() else float("nan")
