"""Kill the training process midway, re-run the same run id: every version exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from registry import Registry
from training import TrainingSettings, run_training
from training.generate import GeneratorConfig, generate

pytestmark = pytest.mark.usefixtures("ray_session")

ROOT = Path(__file__).resolve().parents[2]


def _wait_for(path: Path, proc: subprocess.Popen[bytes], limit_s: float = 240.0) -> None:
    deadline = time.monotonic() + limit_s
    while not path.exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"train exited with {proc.returncode} before halting:\n{err.decode()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("train never reached the halt point")
        time.sleep(0.2)


def test_killed_run_resumes_without_duplicates(tmp_path: Path) -> None:
    import ray

    data, root = str(tmp_path / "features"), str(tmp_path / "reg")
    generate(data, GeneratorConfig(tenants=16, days=3, seed=11, num_shards=4, mean_rows=400))
    Registry.create(root, num_shards=4)
    marker = tmp_path / "halted"
    env = {**os.environ,
           "TENANTRY_RAY_ADDRESS": ray.get_runtime_context().gcs_address,
           "TENANTRY_TRAIN_HALT_AFTER_BUCKETS": "1",
           "TENANTRY_TRAIN_HALT_MARKER": str(marker),
           "TENANTRY_TRAIN_N_ESTIMATORS": "10", "TENANTRY_TRAIN_WINDOW_DAYS": "3"}
    cmd = [sys.executable, "-m", "engine.cli", "train", "--data", data, "--registry", root,
           "--run-id", "nightly-7", "--json"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    _wait_for(marker, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    staged = sorted(Path(root).rglob("model.ubj"))
    assert staged, "the killed run staged no artifacts: it was not killed midway"
    reg = Registry.open(root)
    assert not reg.is_published("nightly-7")
    assert reg.list_tenants() == []  # nothing of the killed run is visible

    settings = TrainingSettings(n_estimators=10, window_days=3, progress=False)
    report = run_training(data, root, run_id="nightly-7", settings=settings)
    assert report.published == report.trained > len(staged) // 2
    reg = Registry.open(root)
    for summary in reg.list_tenants():
        history = reg.history(summary.tenant_id)
        assert [(mv.version, mv.run_id) for mv in history] == [(1, "nightly-7")]
    assert len(reg.list_tenants()) == report.trained
    # the killed run's claims were reused: exactly one version directory per trained tenant
    version_dirs = [p for p in Path(root).rglob("v=*") if p.is_dir()]
    assert len(version_dirs) == report.trained
    # and the artifacts it had already written are the ones now published
    assert all(p in set(Path(root).rglob("model.ubj")) for p in staged)

    again = run_training(data, root, run_id="nightly-7", settings=settings)
    assert again.already_published and again.published == 0
    assert len([p for p in Path(root).rglob("v=*") if p.is_dir()]) == report.trained
