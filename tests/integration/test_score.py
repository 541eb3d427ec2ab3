"""``tenantry score`` on the session Ray: parity with /v1 and XGBoost, one commit per run
id, isolated per-tenant failures, kill + resume, shadow side by side."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import xgboost as xgb
from deltalake import DeltaTable, write_deltalake

from engine.batch import ScoreSettings, run_scoring
from registry import Registry, shard_of

from .conftest import FEATURES, publish, train_bytes

pytestmark = pytest.mark.usefixtures("ray_session")

ROOT = Path(__file__).resolve().parents[2]
DAYS = ("2024-05-01", "2024-05-02")
QUIET = ScoreSettings(progress=False)


def _features(path: str, tenants: list[str], shards: int, seed: int = 0) -> str:
    """Rows of every tenant on two days, partitioned by shard and date, NaNs included."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list[Any]] = {"tenant_id": [], "date": [], "shard": []}
    cols.update({f: [] for f in FEATURES})
    for day in DAYS:
        for t in tenants:
            n = int(rng.integers(10, 60))
            x = rng.normal(size=(n, len(FEATURES))) * 1.5
            x[rng.random(x.shape) < 0.08] = np.nan
            cols["tenant_id"] += [t] * n
            cols["date"] += [day] * n
            cols["shard"] += [shard_of(t, shards)] * n
            for j, f in enumerate(FEATURES):
                cols[f] += x[:, j].tolist()
    table = pa.table({**cols, "shard": pa.array(cols["shard"], pa.int32())})
    write_deltalake(path, table, partition_by=["shard", "date"])
    return path


def _day_rows(data: str, tenant: str) -> np.ndarray:
    """The tenant's rows of the last day in file order (what row_index counts)."""
    t = DeltaTable(data).to_pyarrow_table(filters=[("date", "=", DAYS[-1])])
    t = t.filter(pc.equal(t.column("tenant_id"), tenant))
    return np.column_stack([t.column(f).to_numpy(zero_copy_only=False) for f in FEATURES])


def _scores(out: str) -> pa.Table:
    return DeltaTable(out).to_pyarrow_table().sort_by([("tenant_id", "ascending"),
                                                       ("row_index", "ascending")])


def _of(table: pa.Table, tenant: str) -> pa.Table:
    return table.filter(pc.equal(table.column("tenant_id"), tenant))


@pytest.fixture()
def own(tmp_path: Path) -> dict[str, Any]:
    """A 4-shard registry with s00..s07 at v1 (production) and features for s00..s09."""
    reg = Registry.create(str(tmp_path / "reg"), num_shards=4)
    tenants = [f"s{i:02d}" for i in range(10)]
    publish(reg, {t: train_bytes(20 + i) for i, t in enumerate(tenants[:8])}, "seed")
    data = _features(str(tmp_path / "features"), tenants, 4, seed=3)
    return {"reg": reg, "data": data, "out": str(tmp_path / "scores"), "tmp": tmp_path}


def test_scores_equal_v1_and_xgboost(serving: Any, served_registry: Any,
                                     tmp_path: Path) -> None:
    tenants = [f"t{i:02d}" for i in range(12)]
    data = _features(str(tmp_path / "f"), tenants, served_registry.num_shards, seed=1)
    out = str(tmp_path / "scores")
    report = run_scoring(data, served_registry.root, out, settings=QUIET)
    assert report.tenants == 12 and not report.failed and report.buckets >= 2
    table = _scores(out)
    checked = 0
    with httpx.Client(base_url=serving.url, timeout=30) as client:
        for tenant in tenants:
            mine = _of(table, tenant)
            x = _day_rows(data, tenant)
            got = np.array(mine.column("score").to_pylist())
            assert mine.column("row_index").to_pylist() == list(range(len(x)))
            version = mine.column("version")[0].as_py()
            booster = xgb.Booster(model_file=bytearray(served_registry.read_artifact(
                served_registry.history(tenant)[-version])))
            np.testing.assert_allclose(got, booster.inplace_predict(x.astype(np.float32)),
                                       atol=1e-6, rtol=0)
            payload = [[None if np.isnan(v) else float(v) for v in row] for row in x]
            resp = client.post(f"/v1/tenants/{tenant}/predict", json={"instances": payload})
            assert resp.status_code == 200, resp.text
            if resp.json()["model_version"] != version:
                continue  # another test moved this tenant's production alias meanwhile
            np.testing.assert_allclose(got, resp.json()["predictions"], atol=1e-6, rtol=0)
            checked += 1
    assert checked >= 10


def test_rerun_commits_nothing_and_keeps_the_rows(own: dict[str, Any]) -> None:
    first = run_scoring(own["data"], own["reg"], own["out"], run_id="day-1", settings=QUIET)
    rows = _scores(own["out"])
    version = DeltaTable(own["out"]).version()
    again = run_scoring(own["data"], own["reg"], own["out"], run_id="day-1", settings=QUIET)
    assert again.already_published and (again.rows, again.tenants) == (first.rows, first.tenants)
    assert DeltaTable(own["out"]).version() == version == first.table_version
    assert _scores(own["out"]).equals(rows)


def test_no_model_and_corrupt_artifact_fail_alone(own: dict[str, Any]) -> None:
    reg: Registry = own["reg"]
    broken = reg.get("s03").production
    assert broken is not None
    path = Path(reg.root) / reg.artifact_path(broken)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    report = run_scoring(own["data"], reg, own["out"], settings=QUIET)
    failed = {f.tenant_id: (f.reason, f.detail) for f in report.failed}
    assert set(failed) == {"s03", "s08", "s09"}
    assert failed["s03"][0] == "corrupt_artifact" and "sha256" in failed["s03"][1]
    assert failed["s08"][0] == failed["s09"][0] == "no_model"
    scored = set(_scores(own["out"]).column("tenant_id").to_pylist())
    assert scored == {f"s{i:02d}" for i in range(8)} - {"s03"} and report.tenants == 7


def test_killed_midway_then_resumed_publishes_exactly_once(own: dict[str, Any]) -> None:
    import ray

    marker = own["tmp"] / "halted"
    env = {**os.environ, "TENANTRY_RAY_ADDRESS": ray.get_runtime_context().gcs_address,
           "TENANTRY_SCORE_HALT_AFTER_BUCKETS": "1", "TENANTRY_SCORE_HALT_MARKER": str(marker)}
    cmd = [sys.executable, "-m", "engine.cli", "score", "--data", own["data"], "--registry",
           own["reg"].root, "--out", own["out"], "--run-id", "nightly-s", "--json"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"score exited with {proc.returncode} before halting:\n"
                        f"{proc.communicate()[1].decode()}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("score never reached the halt point")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not DeltaTable.is_deltatable(own["out"])  # nothing visible
    manifests = list(Path(own["out"]).rglob("bucket-*.json"))
    assert manifests, "the killed run finished no bucket: it was not killed midway"

    report = run_scoring(own["data"], own["reg"], own["out"], run_id="nightly-s",
                         settings=QUIET)
    assert 1 <= report.resumed_buckets < report.buckets or \
        report.resumed_buckets == report.buckets == len(manifests)
    table = _scores(own["out"])
    keys = list(zip(table.column("tenant_id").to_pylist(), table.column("row_index").to_pylist(),
                    strict=True))
    assert len(keys) == len(set(keys)) == report.rows
    day = DeltaTable(own["data"]).to_pyarrow_table(filters=[("date", "=", DAYS[-1])])
    with_model = pc.is_in(day.column("tenant_id"), pa.array([f"s{i:02d}" for i in range(8)]))
    assert report.rows == pc.sum(with_model).as_py()
    assert DeltaTable(own["out"]).version() == 0  # one commit
    again = run_scoring(own["data"], own["reg"], own["out"], run_id="nightly-s",
                        settings=QUIET)
    assert again.already_published and DeltaTable(own["out"]).version() == 0


def test_shadow_alias_scores_side_by_side(own: dict[str, Any]) -> None:
    reg: Registry = own["reg"]
    publish(reg, {"s01": train_bytes(91), "s05": train_bytes(95)}, "candidates", "shadow")
    report = run_scoring(own["data"], reg, own["out"], alias="shadow", settings=QUIET)
    assert report.alias == "shadow" and report.shadow_tenants == 2
    table = _scores(own["out"])
    for tenant, seed in (("s01", 91), ("s05", 95)):
        mine = _of(table, tenant)
        assert set(mine.column("version").to_pylist()) == {1}
        assert set(mine.column("shadow_version").to_pylist()) == {2}
        want = xgb.Booster(model_file=bytearray(train_bytes(seed))).inplace_predict(
            _day_rows(own["data"], tenant).astype(np.float32))
        np.testing.assert_allclose(mine.column("shadow_score").to_pylist(), want, atol=1e-6)
    others = table.filter(pc.invert(pc.is_in(table.column("tenant_id"),
                                             pa.array(["s01", "s05"]))))
    assert others.num_rows > 0
    assert others.column("shadow_version").null_count == others.num_rows
    assert others.column("score").null_count == 0
