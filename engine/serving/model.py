"""A model loaded for serving: its predictor, feature names and memory footprint.

Most artifacts compile to a :class:`~engine.serving.forest.CompiledForest` (flat numpy
arrays walked per request: ~25 us for one row instead of ~200 us in
``Booster.inplace_predict``, a third of the memory, and an exact footprint). Models the
forest does not handle (dart, multi-class, categorical splits, …) fall back to an
``xgboost.Booster``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from engine.serving.forest import ForestUnsupported, compile_forest
from registry import ModelKey, ModelVersion, Registry
from registry.errors import ModelLoadError
from registry.registry import booster_from_bytes

__all__ = ["LoadedModel", "load_model", "FOOTPRINT_PER_ARTIFACT_BYTE", "FOOTPRINT_FIXED_BYTES"]

# Resident memory of a loaded Booster per byte of its UBJSON artifact, measured on this
# kind of machine over 500 boosters of 50 trees x depth 5 (RSS delta / artifact bytes:
# 100.3 KB / 81.5 KB = 1.23); `tenantry loadtest --footprint` re-measures it per model.
FOOTPRINT_PER_ARTIFACT_BYTE = 1.25
FOOTPRINT_FIXED_BYTES = 4096  # Python objects around the arrays / booster

Predictor = Callable[[np.ndarray], np.ndarray]


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

    @property
    def n_features(self) -> int:
        """Width of a feature row."""
        return len(self.feature_names)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for each row of ``x`` (float32, NaN = missing)."""
        return self.predictor(x)


def load_model(registry: Registry, mv: ModelVersion) -> LoadedModel:
    """Read, verify (sha256) and load ``mv``; blocking, run it off the event loop.

    Raises:
        ChecksumMismatch: the artifact's bytes do not match the index.
        ModelLoadError: missing artifact or not a valid XGBoost model.
    """
    data = registry.read_artifact(mv)
    key = ModelKey(mv.tenant_id, mv.version)
    try:
        forest = compile_forest(data)
    except ForestUnsupported:
        forest = None
    if forest is not None:
        names = tuple(mv.feature_names) or forest.feature_names or \
            tuple(f"f{i}" for i in range(forest.n_features))
        if len(names) != forest.n_features:
            raise ModelLoadError(f"{key}: index lists {len(names)} features, the model "
                                 f"uses {forest.n_features}")
        return LoadedModel(key, mv, forest.predict, names,
                           forest.nbytes + FOOTPRINT_FIXED_BYTES, "forest",
                           {n: i for i, n in enumerate(names)})
    booster = booster_from_bytes(data, str(key))

    def predict(x: np.ndarray) -> np.ndarray:
        return booster.inplace_predict(x, validate_features=False)

    names = tuple(mv.feature_names) or tuple(booster.feature_names or ()) or \
        tuple(f"f{i}" for i in range(booster.num_features()))
    nbytes = int(mv.size_bytes * FOOTPRINT_PER_ARTIFACT_BYTE) + FOOTPRINT_FIXED_BYTES
    return LoadedModel(key, mv, predict, names, nbytes, "xgboost",
                       {n: i for i, n in enumerate(names)})

