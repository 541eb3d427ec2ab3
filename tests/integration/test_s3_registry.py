"""The registry on ``s3://``: a local S3-compatible server (moto, server mode) on loopback.

Credentials and the endpoint reach the registry the way they do in production: as the
usual ``AWS_*`` variables, read by :class:`registry.RegistrySettings`. The tests pass the
resulting ``storage_options`` explicitly (or give the variables to a child process only),
so nothing leaks into the environment of other tests. No Ray here.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from registry import AliasMove, NewVersion, Registry, RegistrySettings, StagedArtifact
from registry.errors import ChecksumMismatch, RegistryError
from registry.gc import collect_garbage
from registry.storage import ArtifactStore
from tests.conftest import train_tiny

FEATURES = ("amount", "age_days", "velocity")

WRITER = textwrap.dedent("""
    import sys, time
    from registry import AliasMove, NewVersion, Registry, RegistrySettings
    root, name, runs, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    data = open(sys.argv[5], "rb").read()
    reg = Registry.open(root, RegistrySettings.from_env().storage_options(root))
    while time.time() < start_at:
        time.sleep(0.005)
    for r in range(runs):
        run_id = f"{name}-{r}"
        staged = [reg.stage_artifact(t, data, run_id) for t in ("shared-1", "shared-2", name)]
        reg.publish(run_id, [NewVersion(s, ("amount", "age_days", "velocity"), {"auc": 0.8})
                             for s in staged],
                    [AliasMove(s.tenant_id, "production", s.version) for s in staged])
""")


def _new_version(staged: StagedArtifact) -> NewVersion:
    return NewVersion(staged, FEATURES, {"auc": 0.8, "logloss": 0.4}, data_date="2026-11-27")


def _publish(reg: Registry, run_id: str, tenants: list[str], data: bytes) -> list[int]:
    staged = [reg.stage_artifact(t, data, run_id) for t in tenants]
    reg.publish(run_id, [_new_version(s) for s in staged],
                [AliasMove(s.tenant_id, "production", s.version) for s in staged])
    return [s.version for s in staged]


@pytest.fixture(scope="session")
def model_bytes() -> bytes:
    return train_tiny(features=FEATURES, rows=120, rounds=4, depth=2)


@pytest.fixture()
def s3_reg(bucket: str, s3_env: dict[str, str]) -> Registry:
    root = f"s3://{bucket}/registry"
    return Registry.create(root, 4, RegistrySettings.from_env(s3_env).storage_options(root))


def _keys(s3_client: Any, bucket: str, prefix: str = "") -> list[str]:
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def test_settings_map_the_aws_environment(s3_env: dict[str, str]) -> None:
    env = {**s3_env, "TENANTRY_REGISTRY": "s3://b/p", "AWS_DEFAULT_REGION": "eu-west-1",
           "HOME": "/root"}
    settings = RegistrySettings.from_env(env)
    opts = settings.storage_options()
    assert settings.root == "s3://b/p"
    assert opts["AWS_ENDPOINT_URL"] == s3_env["AWS_ENDPOINT_URL"]
    assert opts["AWS_REGION"] == "us-east-1"  # AWS_REGION wins over AWS_DEFAULT_REGION
    assert opts["AWS_ALLOW_HTTP"] == "true" and opts["conditional_put"] == "etag"
    assert "HOME" not in opts and "HOME" not in settings.env
    assert settings.storage_options("/local/path") == {}


def test_registry_from_env_publishes_and_serves_from_s3(
        bucket: str, s3_env: dict[str, str], s3_client: Any, model_bytes: bytes) -> None:
    root = f"s3://{bucket}/registry"
    # The AWS_* variables as main reads them; the library never reads the environment.
    opts = RegistrySettings.from_env(s3_env).storage_options(root)
    reg = Registry.create(root, num_shards=4, storage_options=opts)
    snap = reg.new_snapshot()
    assert snap.tenants() == []
    assert _publish(reg, "run-1", ["acme", "globex"], model_bytes) == [1, 1]
    assert snap.refresh() is True
    mv = snap.resolve("acme")
    shard = reg.shard_of("acme")
    assert mv.artifact_uri == f"{root}/artifacts/shard={shard:02d}/tenant=acme/v=1/model.ubj"
    assert f"registry/artifacts/shard={shard:02d}/tenant=acme/v=1/model.ubj" in \
        _keys(s3_client, bucket)
    assert any(k.startswith("registry/index/models/_delta_log/") for k in _keys(s3_client, bucket))

    original = xgb.Booster()
    original.load_model(bytearray(model_bytes))
    x = np.random.default_rng(3).random((5, 3))
    np.testing.assert_allclose(reg.load_booster(mv).inplace_predict(x),
                               original.inplace_predict(x))
    # A registry handle travels to other processes (Ray tasks) by pickling.
    clone = pickle.loads(pickle.dumps(Registry.open(root, opts)))
    assert clone.num_shards == 4
    assert [m.version for m in clone.history("globex")] == [1]
    assert Registry.create(root, 4, opts).num_shards == 4  # idempotent on s3 too


def test_flipped_byte_in_the_s3_object_fails_its_checksum(
        s3_reg: Registry, s3_client: Any, bucket: str, model_bytes: bytes) -> None:
    _publish(s3_reg, "run-1", ["good", "bad"], model_bytes)
    bad = s3_reg.snapshot().resolve("bad")
    key = bad.artifact_uri.removeprefix(f"s3://{bucket}/")
    raw = bytearray(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())
    raw[len(raw) // 2] ^= 0xFF
    s3_client.put_object(Bucket=bucket, Key=key, Body=bytes(raw))
    with pytest.raises(ChecksumMismatch, match="sha256"):
        s3_reg.load_booster(bad)
    assert s3_reg.load_booster(s3_reg.snapshot().resolve("good")).num_features() == 3


def test_claims_are_conditional_puts(s3_reg: Registry, s3_client: Any, bucket: str) -> None:
    store = s3_reg.store
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def claim(i: int) -> None:
        racer = ArtifactStore(store.root, store.storage_options)
        barrier.wait()
        results.append(racer.create_exclusive("claims/x.json", f"{i}".encode()))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    winner = s3_client.get_object(Bucket=bucket, Key="registry/claims/x.json")["Body"].read()
    assert store.create_exclusive("claims/x.json", b"late") is False
    assert store.read("claims/x.json") == winner  # the first claim was never overwritten


def test_store_without_conditional_puts_is_refused(s3_reg: Registry) -> None:
    from botocore.stub import Stubber

    store = s3_reg.store
    with Stubber(store._s3_client()) as stub:
        stub.add_client_error("put_object", service_error_code="NotImplemented",
                              http_status_code=501)
        with pytest.raises(RegistryError, match="conditional puts"):
            store.create_exclusive("claims/y.json", b"{}")


def test_two_publisher_processes_lose_nothing(
        tmp_path: Path, s3_reg: Registry, s3_env: dict[str, str], model_bytes: bytes) -> None:
    bindir = tmp_path / "bin"  # never beside a directory named like a package (shadowing)
    bindir.mkdir()
    script, model = bindir / "writer.py", bindir / "model.ubj"
    script.write_text(WRITER)
    model.write_bytes(model_bytes)
    child_env = {**os.environ, **s3_env}  # the variables reach the children only
    start_at = time.time() + 3.0
    runs = 5
    procs = [subprocess.Popen([sys.executable, str(script), s3_reg.root, name, str(runs),
                               str(start_at), str(model)], env=child_env, cwd=bindir)
             for name in ("w1", "w2")]
    assert [p.wait(timeout=240) for p in procs] == [0, 0]
    snap = s3_reg.new_snapshot()
    for tenant in ("shared-1", "shared-2"):
        versions = snap.versions(tenant)
        assert sorted(m.version for m in versions) == list(range(1, 2 * runs + 1))
        assert {m.run_id for m in versions} == {f"w{w}-{r}" for w in (1, 2) for r in range(runs)}
        for mv in versions:  # every version's artifact is present and intact
            assert s3_reg.read_artifact(mv) == model_bytes
    assert len(snap.versions("w1")) == len(snap.versions("w2")) == runs
    assert all(s3_reg.is_published(f"w{w}-{r}") for w in (1, 2) for r in range(runs))
    assert s3_reg.index.table("runs").version() == 2 * runs  # one runs commit per run


def test_gc_removes_an_orphan_and_compacts_on_s3(
        s3_reg: Registry, s3_client: Any, bucket: str, model_bytes: bytes) -> None:
    for i in range(1, 4):
        _publish(s3_reg, f"run-{i}", ["acme"], model_bytes)
    orphan = s3_reg.stage_artifact("acme", model_bytes, "crashed-run")
    orphan_prefix = orphan.artifact_uri.removeprefix(f"s3://{bucket}/").rsplit("/", 1)[0]
    assert len(_keys(s3_client, bucket, orphan_prefix + "/")) == 3  # claim, model, sha256
    young = collect_garbage(s3_reg, keep=10, orphan_grace_s=3600, compact=False)
    assert (young.orphans_removed, young.versions_removed) == (0, 0)  # may be publishing
    report = collect_garbage(s3_reg, keep=1, orphan_grace_s=0)
    assert report.orphans_removed == 1 and report.versions_removed == 1  # the orphan and v1
    assert _keys(s3_client, bucket, orphan_prefix + "/") == []
    fresh = Registry.open(s3_reg.root, s3_reg.storage_options)
    assert [m.version for m in fresh.history("acme")] == [3, 2, 1]  # rows stay as history
    assert fresh.new_snapshot().alias_version("acme") == 3
    fresh.load_booster(fresh.snapshot().resolve("acme"))
    assert any("checkpoint" in k for k in _keys(s3_client, bucket, "registry/index/models/"))
