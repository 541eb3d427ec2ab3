"""Fixtures for registry tests: tiny real XGBoost models and a real Delta registry on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry import NewVersion, Registry, StagedArtifact
from tests.conftest import train_tiny as train_model

FEATURES = ("amount", "age_days", "velocity")


def train_tiny(seed: int = 0, rounds: int = 4) -> bytes:
    """A small real booster as UBJSON bytes."""
    return train_model(seed, features=FEATURES, rows=120, rounds=rounds, depth=2)


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
