"""Shadow-mode unit fixtures: a real tiny registry and a ModelHostState with a mirror."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from engine.serving.host import ModelHostState
from engine.settings import ServeSettings
from registry import Registry
from tests.conftest import load_booster, publish_models, wait_for
from tests.conftest import train_tiny as train_model

FEATURES = ("amount", "age_days", "velocity", "risk")
TENANT = "acme"


def wait_until(cond: Callable[[], Any], timeout: float = 10.0) -> None:
    """Poll ``cond`` until it holds; fail the test after ``timeout`` seconds."""
    wait_for(cond, timeout)


def train_tiny(seed: int, rounds: int = 6) -> bytes:
    """A small real binary classifier on FEATURES; different seeds disagree somewhat."""
    return train_model(seed, features=FEATURES, rows=300, rounds=rounds)


def publish(reg: Registry, tenant: str, data: bytes, run_id: str, alias: str) -> int:
    """Publish one version of ``tenant`` under ``alias``; returns its version."""
    return publish_models(reg, {tenant: data}, run_id, features=FEATURES, alias=alias,
                          metrics={"auc": 0.9})[tenant]


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
    return World(root, reg, load_booster(prod), load_booster(shadow))


@pytest.fixture()
def fresh(tmp_path: Path) -> World:
    """A private registry per test, so pair logs do not mix."""
    root = str(tmp_path / "registry")
    reg = Registry.create(root, num_shards=2)
    prod, shadow = train_tiny(1), train_tiny(2)
    publish(reg, TENANT, prod, "run-1", "production")
    publish(reg, TENANT, shadow, "run-2", "shadow")
    return World(root, reg, load_booster(prod), load_booster(shadow))


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
                           train_tiny=train_tiny, publish=publish, booster=load_booster)
