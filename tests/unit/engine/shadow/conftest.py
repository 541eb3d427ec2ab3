"""Shadow-mode unit fixtures: a real tiny registry and a ModelHostState with a mirror."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from engine.serving.host import ModelHostState
from engine.settings import ServeSettings
from registry import AliasMove, NewVersion, Registry

FEATURES = ("amount", "age_days", "velocity", "risk")
TENANT = "acme"


def wait_until(cond: Callable[[], Any], timeout: float = 10.0) -> None:
    """Poll ``cond`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def train_tiny(seed: int, rounds: int = 6) -> bytes:
    """A small real binary classifier on FEATURES; different seeds disagree somewhat."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, len(FEATURES)))
    y = (x[:, 0] * (1 + seed) - x[:, 1] + 0.5 * rng.normal(size=300) > 0).astype(int)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1,
                         "seed": seed}, xgb.DMatrix(x, y, feature_names=list(FEATURES)), rounds)
    return bytes(booster.save_raw("ubj"))


def publish(reg: Registry, tenant: str, data: bytes, run_id: str, alias: str) -> int:
    """Publish one version of ``tenant`` under ``alias``; returns its version."""
    staged = reg.stage_artifact(tenant, data, run_id)
    reg.publish(run_id, [NewVersion(staged, FEATURES, {"auc": 0.9})],
                [AliasMove(tenant, alias, staged.version)])
    return staged.version


def booster(data: bytes) -> xgb.Booster:
    b = xgb.Booster()
    b.load_model(bytearray(data))
    return b


@dataclass
class World:
    """A registry with TENANT at v1 (production) and v2 (shadow), plus their boosters."""

    root: str
    reg: Registry
    production: xgb.Booster
    shadow: xgb.Booster

    def settings(self, **kw: Any) -> ServeSettings:
        base: dict[str, Any] = {"registry": self.root, "shadow_flush_s": 0.2,
                                "shadow_config_refresh_s": 0.2, "shadow_worker": "thread"}
        base.update(kw)
        return ServeSettings(**base)

    def host(self, **kw: Any) -> ModelHostState:
        return ModelHostState(self.settings(**kw), Registry.open(self.root))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = str(tmp_path_factory.mktemp("shadow") / "registry")
    reg = Registry.create(root, num_shards=2)
    prod, shadow = train_tiny(1), train_tiny(2)
    publish(reg, TENANT, prod, "run-1", "production")
    publish(reg, TENANT, shadow, "run-2", "shadow")
    publish(reg, "solo", prod, "run-3", "production")
    return World(root, reg, booster(prod), booster(shadow))


@pytest.fixture()
def fresh(tmp_path: Path) -> World:
    """A private registry per test, so pair logs do not mix."""
    root = str(tmp_path / "registry")
    reg = Registry.create(root, num_shards=2)
    prod, shadow = train_tiny(1), train_tiny(2)
    publish(reg, TENANT, prod, "run-1", "production")
    publish(reg, TENANT, shadow, "run-2", "shadow")
    return World(root, reg, booster(prod), booster(shadow))


def rows(n: int, seed: int = 0) -> np.ndarray:
    """``n`` feature rows (a few missing)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES)))
    x[rng.random(x.shape) < 0.05] = np.nan
    return x


def body(x: np.ndarray) -> bytes:
    return json.dumps({"instances": [[None if np.isnan(v) else float(v) for v in r]
                                     for r in x]}).encode()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture()
def closing() -> Iterator[Callable[[ModelHostState], ModelHostState]]:
    """Register host states to close at teardown."""
    states: list[ModelHostState] = []
    yield lambda s: (states.append(s), s)[1]
    for s in states:
        s.close()


@pytest.fixture()
def h() -> Any:
    """Helpers for tests (conftest modules are not importable under importlib mode)."""
    from types import SimpleNamespace

    return SimpleNamespace(rows=rows, body=body, run=run, TENANT=TENANT, FEATURES=FEATURES,
                           train_tiny=train_tiny, publish=publish, booster=booster)
