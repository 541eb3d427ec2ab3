"""Session fixtures for integration tests: one local Ray and one serving app per session."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import publish_models, train_tiny, wait_for
from training.cluster import worker_niceness_config

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

FEATURES = ("txn_amount", "account_age_days", "txn_velocity_1h", "chargeback_rate", "ip_risk")


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train_bytes(seed: int, rounds: int = 8, n: int = 300) -> bytes:
    """A small real binary classifier on FEATURES, as UBJSON."""
    return train_tiny(seed, features=FEATURES, rows=n, rounds=rounds, missing=0.05)


def publish(reg: Any, tenants: dict[str, bytes], run_id: str,
            alias: str = "production") -> dict[str, int]:
    """Stage and publish one version per tenant; returns tenant -> version."""
    return publish_models(reg, tenants, run_id, features=FEATURES, alias=alias)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """Start one local Ray (2 CPUs, loopback only) for the session; tests share it."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.2", namespace="tenantry",  # 127.0.0.1 is rewritten
                 _system_config=worker_niceness_config() or None)  # as tenantry starts Ray
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


@pytest.fixture(scope="session")
def s3_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A moto S3 server on 127.0.0.1 and the AWS_* variables that reach it.

    The server runs in its own process, not in a thread of this one: some deltalake calls
    (``load_cdf``) hold the GIL while they wait on the network, which would starve an
    in-process server and hang the test.
    """
    log = (tmp_path_factory.mktemp("moto") / "server.log").open("wb")
    for _ in range(5):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
        if _wait_listening(port, proc):
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail("moto server did not start")
    yield {"AWS_ACCESS_KEY_ID": "tenantry-test", "AWS_SECRET_ACCESS_KEY": "tenantry-secret",
           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def _listening(port: int, proc: subprocess.Popen[bytes]) -> bool:
    """Whether the server accepts connections; raises AssertionError once it has exited."""
    assert proc.poll() is None, "the server exited"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> bool:
    try:
        return bool(wait_for(lambda: _listening(port, proc), timeout=30.0, every=0.1))
    except AssertionError:
        return False


@pytest.fixture(scope="session")
def s3_client(s3_env: dict[str, str]) -> Any:
    """A boto3 client on the test server, to inspect and tamper with objects directly."""
    import boto3

    return boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"],
                        aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"],
                        region_name=s3_env["AWS_REGION"])


@pytest.fixture()
def bucket(s3_client: Any) -> str:
    name = f"tenantry-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name
