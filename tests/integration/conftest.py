"""Session fixtures for integration tests: one local Ray and one serving app per session."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

FEATURES = ("txn_amount", "account_age_days", "txn_velocity_1h", "chargeback_rate", "ip_risk")


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, every: float = 0.05,
             what: Callable[[], Any] = lambda: "") -> Any:
    """Poll ``cond`` until it returns something truthy (returned); fail after ``timeout``
    seconds, adding ``what()`` to the message."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, f"condition not reached in time {what()}"
        time.sleep(every)


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train_bytes(seed: int, rounds: int = 8, n: int = 300) -> bytes:
    """A small real binary classifier on FEATURES, as UBJSON."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES)))
    x[rng.random(x.shape) < 0.05] = np.nan
    logits = x[:, 0] * (1 + seed % 3) - x[:, 1] + 0.3 * rng.normal(size=n)
    y = (np.nan_to_num(logits) > 0).astype(int)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1,
                         "seed": seed}, xgb.DMatrix(x, y, feature_names=list(FEATURES)), rounds)
    return bytes(booster.save_raw("ubj"))


def publish(reg: Any, tenants: dict[str, bytes], run_id: str,
            alias: str = "production") -> dict[str, int]:
    """Stage and publish one version per tenant; returns tenant -> version."""
    from registry import AliasMove, NewVersion

    staged = [reg.stage_artifact(t, data, run_id) for t, data in tenants.items()]
    reg.publish(run_id, [NewVersion(s, FEATURES, {"auc": 0.9, "logloss": 0.3}) for s in staged],
                [AliasMove(s.tenant_id, alias, s.version) for s in staged])
    return {s.tenant_id: s.version for s in staged}


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """Start one local Ray (2 CPUs, loopback only) for the session; tests share it."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.2", namespace="tenantry")  # 127.0.0.1 is rewritten
    yield
    from ray import serve

    with contextlib.suppress(Exception):  # Serve may never have started
        serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def served_registry(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A registry with 12 tenants t00..t11 at v1 (production), shared by serving tests."""
    from registry import Registry

    root = tmp_path_factory.mktemp("served") / "registry"
    reg = Registry.create(str(root), num_shards=4)
    publish(reg, {f"t{i:02d}": train_bytes(i) for i in range(12)}, "seed-run")
    return reg


@pytest.fixture(scope="session")
def serving(ray_session: None, served_registry: Any) -> Iterator[Any]:
    """One running tenantry app (an ingress + 2 model hosts) over ``served_registry``.

    The ingress's request timeout is 3 s (10 s by default) so slow-client tests are short.
    """
    from engine.serving.launch import start_serving
    from engine.settings import ServeSettings

    settings = ServeSettings(registry=served_registry.root, port=free_port(), replicas=2,
                             cache_mb=2.0, refresh_interval_s=0.5, replica_ttl_s=3.0,
                             shadow_flush_s=2.0,  # the shadow tests wait in flush periods
                             ingress_request_timeout_s=3.0)
    handle = start_serving(settings, app_name="itest")
    yield handle
    handle.shutdown()


@pytest.fixture()
def train() -> Callable[[int], bytes]:
    """Train a tiny model: ``train(seed) -> ubj bytes``."""
    return train_bytes


@pytest.fixture()
def artifacts_dir(served_registry: Any) -> Path:
    return Path(served_registry.root) / "artifacts"
