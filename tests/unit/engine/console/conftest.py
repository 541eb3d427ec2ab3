"""Console unit fixtures: a small real registry (tiny XGBoost models, three nights)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from registry import AliasMove, NewVersion, Registry
from tests.conftest import train_tiny as train_model

FEATURES = ("amount", "age_days", "velocity")
TENANTS = ("acme", "globex", "initech")


def train_tiny(seed: int = 0) -> bytes:
    """A small real booster as UBJSON bytes."""
    return train_model(seed, features=FEATURES, rows=120, rounds=4, depth=2)


def make_registry(root: Path, nights: int = 3, tenants: tuple[str, ...] = TENANTS) -> Registry:
    """A registry where each tenant got one version per night, each promoted by its run."""
    reg = Registry.create(str(root), num_shards=4)
    data = train_tiny()
    for night in range(nights):
        run = f"run-{night}"
        staged = [reg.stage_artifact(t, data, run) for t in tenants]
        versions = [NewVersion(s, FEATURES, {"auc": 0.70 + 0.05 * night + 0.01 * i,
                                             "logloss": 0.5 - 0.03 * night, "n_train": 100},
                               data_date=f"2026-11-2{night}")
                    for i, s in enumerate(staged)]
        reg.publish(run, versions,
                    [AliasMove(s.tenant_id, "production", s.version, "gate: better")
                     for s in staged],
                    run_record={"date": f"2026-11-2{night}", "trained": len(tenants),
                                "skipped": 1, "failed": 1, "elapsed_s": 12.5,
                                "reasons": {"too_few_rows": 1, "exception": 1},
                                "failures": [
                                    {"tenant_id": "tiny", "status": "skipped",
                                     "reason": "too_few_rows", "detail": "12 rows"},
                                    {"tenant_id": "broken", "status": "failed",
                                     "reason": "exception", "detail": "boom"}]})
    return reg


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One registry shared by a module's tests (they must not depend on each other's
    alias moves beyond what they make themselves)."""
    root = tmp_path_factory.mktemp("console") / "registry"
    return SimpleNamespace(root=str(root), reg=make_registry(root))


@pytest.fixture()
def h() -> Any:
    """Helpers (conftest modules are not importable under importlib mode)."""
    return SimpleNamespace(registry=make_registry, train_tiny=train_tiny, FEATURES=FEATURES)
