"""Fixtures for registry tests: tiny real XGBoost models and a real Delta registry on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from registry import NewVersion, Registry, StagedArtifact

FEATURES = ("amount", "age_days", "velocity")


def train_tiny(seed: int = 0, rounds: int = 4) -> bytes:
    """A small real booster as UBJSON bytes."""
    rng = np.random.default_rng(seed)
    x = rng.random((120, 3))
    y = (x[:, 0] + 0.1 * rng.random(120) > 0.5).astype(int)
    booster = xgb.train({"max_depth": 2, "nthread": 1, "seed": seed},
                        xgb.DMatrix(x, y, feature_names=list(FEATURES)), rounds)
    return bytes(booster.save_raw("ubj"))


def new_version(staged: StagedArtifact, auc: float = 0.8) -> NewVersion:
    """Wrap a staged artifact with metrics."""
    return NewVersion(staged, FEATURES, {"auc": auc, "logloss": 0.4, "n_train": 100,
                                         "n_holdout": 20, "base_rate": 0.3},
                      data_date="2026-11-27")


@pytest.fixture(scope="session")
def model_bytes() -> bytes:
    return train_tiny()


@pytest.fixture()
def reg(tmp_path: Path) -> Registry:
    return Registry.create(str(tmp_path / "registry"), num_shards=4)
