"""A model loaded for serving: the booster, its feature names and its memory footprint."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from registry import ModelKey, ModelVersion, Registry

__all__ = ["LoadedModel", "load_model", "FOOTPRINT_PER_ARTIFACT_BYTE", "FOOTPRINT_FIXED_BYTES"]

# Resident memory of a loaded Booster per byte of its UBJSON artifact, measured on this
# kind of machine over 500 boosters of 50 trees x depth 5 (RSS delta / artifact bytes:
# 100.3 KB / 81.5 KB = 1.23); `tenantry loadtest --footprint` re-measures it per model.
FOOTPRINT_PER_ARTIFACT_BYTE = 1.25
FOOTPRINT_FIXED_BYTES = 4096


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """One tenant's model at one version, ready to predict."""

    key: ModelKey
    version: ModelVersion
    booster: Any
    feature_names: tuple[str, ...]
    nbytes: int
    index: Mapping[str, int] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        """Width of a feature row."""
        return len(self.feature_names)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for each row of ``x`` (NaN = missing)."""
        return self.booster.inplace_predict(x, validate_features=False)


def load_model(registry: Registry, mv: ModelVersion) -> LoadedModel:
    """Read, verify (sha256) and load ``mv``; blocking, run it off the event loop.

    Raises:
        ChecksumMismatch: the artifact's bytes do not match the index.
        ModelLoadError: missing artifact or not a valid XGBoost model.
    """
    booster = registry.load_booster(mv)
    names = tuple(mv.feature_names) or tuple(booster.feature_names or ()) or \
        tuple(f"f{i}" for i in range(booster.num_features()))
    nbytes = int(mv.size_bytes * FOOTPRINT_PER_ARTIFACT_BYTE) + FOOTPRINT_FIXED_BYTES
    return LoadedModel(ModelKey(mv.tenant_id, mv.version), mv, booster, names, nbytes,
                       {n: i for i, n in enumerate(names)})
