"""`tenantry data generate` and `tenantry train` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("ray_session")

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = {"run_id", "date", "trained", "skipped", "failed", "published", "promoted",
            "shadowed", "models_per_s", "elapsed_s"}


def _tenantry(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, text=True,
                          capture_output=True, check=False, env={**os.environ, **(env or {})}, timeout=600)


def test_generate_then_train_json(tmp_path: Path) -> None:
    import ray

    data, reg = str(tmp_path / "features"), str(tmp_path / "reg")
    gen = _tenantry("data", "generate", "--out", data, "--tenants", "10", "--days", "3",
                    "--seed", "4", "--shards", "4", "--mean-rows", "300", "--registry", reg,
                    "--json")
    assert gen.returncode == 0, gen.stderr
    doc = json.loads(gen.stdout)
    assert (doc["tenants"], doc["days"], doc["shards"]) == (10, 3, 4)
    env = {"TENANTRY_RAY_ADDRESS": ray.get_runtime_context().gcs_address,
           "TENANTRY_TRAIN_N_ESTIMATORS": "5"}
    init = _tenantry("registry", "init", "--registry", reg, "--shards", "4")
    assert init.returncode == 0, init.stderr
    train = _tenantry("train", "--data", data, "--registry", reg, "--json", env=env)
    assert train.returncode == 0, train.stderr
    report = json.loads(train.stdout)  # stdout holds exactly one JSON document
    assert CONTRACT <= set(report)
    assert report["date"] == doc["dates"][-1]
    assert report["trained"] + report["skipped"] + report["failed"] == 10
    assert report["published"] == report["trained"] > 0
    assert "[train] bucket" in train.stderr  # progress goes to stderr


def test_user_errors_are_one_line(tmp_path: Path) -> None:
    missing = _tenantry("train", "--data", str(tmp_path / "nope"), "--registry",
                        str(tmp_path / "reg"))
    assert missing.returncode == 2
    assert missing.stderr.startswith("tenantry: error: no feature table")
    assert "Traceback" not in missing.stderr
    bad_date = _tenantry("data", "generate", "--out", str(tmp_path / "x"), "--tenants", "2",
                         "--days", "1", "--start", "2024-13-01", "--registry",
                         str(tmp_path / "reg"))
    assert bad_date.returncode == 2 and "invalid date" in bad_date.stderr
