"""Model quality monitoring end to end through the CLI: models trained by `tenantry train`
(with their profiles), production answers logged by a model host, `tenantry monitor run`
on Ray Data, `monitor report`, `registry trend`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from engine.monitor.log import attach_prediction_log
from engine.monitor.psi import drift
from engine.serving.host import ModelHostState
from engine.settings import ServeSettings
from registry import Registry
from training.craft import tenant_rows
from training.features import FEATURE_NAMES
from training.table import write_rows

from .conftest import FEATURES, publish, train_bytes

pytestmark = pytest.mark.usefixtures("ray_session")

ROOT = Path(__file__).resolve().parents[2]
SHIFTED = 9  # ip_risk_score: moved by 3 standard deviations for "shifted" (and "renewed" v2)
HOLES = (3, 4, 5)  # mostly missing for "holes"
RUN_KEYS = {"run_id", "tenants", "flagged", "rows"}
REPORT_KEYS = {"tenant_id", "version", "rows", "score_psi", "flagged", "reasons", "features"}


def _tenantry(*args: str) -> subprocess.CompletedProcess[str]:
    import ray

    env = {**os.environ, "TENANTRY_RAY_ADDRESS": ray.get_runtime_context().gcs_address,
           "TENANTRY_TRAIN_N_ESTIMATORS": "5", "TENANTRY_TRAIN_WINDOW_DAYS": "3"}
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, text=True,
                          capture_output=True, check=False, env=env, timeout=600)


def _ok(*args: str) -> Any:
    done = _tenantry(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _x(rng: np.random.Generator, n: int, shift: float = 0.0,
       holes: tuple[int, ...] = ()) -> np.ndarray:
    x = rng.normal(size=(n, len(FEATURE_NAMES)))
    x[:, SHIFTED] += shift
    for j in holes:
        x[rng.random(n) < 0.6, j] = np.nan
    return x


def _day_rows(tenant: str, day: str, seed: int, shift: float = 0.0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = _x(rng, 400, shift)
    y = (x[:, 0] + 0.5 * rng.normal(size=len(x)) > 0).astype(np.int8)
    return tenant_rows(tenant, day, x, y, num_shards=4)


async def _serve(root: str, traffic: dict[str, np.ndarray]) -> None:
    """Every tenant's rows as 10-row predict requests to an in-process model host (its
    prediction log logging everything), plus synthetic requests that must not be logged."""
    state = ModelHostState(ServeSettings(registry=root, log_sample=1.0), Registry.open(root))
    attach_prediction_log(state)  # as the Serve app does
    for tenant, x in traffic.items():
        for i in range(0, len(x), 10):
            rows = [[None if np.isnan(v) else float(v) for v in r] for r in x[i:i + 10]]
            await state.predict(tenant, json.dumps({"instances": rows}).encode(), f"{tenant}-{i}")
        await state.predict(tenant, json.dumps({"instances": rows}).encode(), "synthetic-1",
                            synthetic=True)
    state.close()  # writes what the log holds


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("monitor")
    root, first, second = str(base / "reg"), str(base / "features"), str(base / "features2")
    days = ("2026-02-01", "2026-02-02", "2026-02-03")
    write_rows(first, pa.concat_tables([
        _day_rows(t, d, 10 * k + i) for k, t in enumerate(("calm", "shifted", "holes",
                                                            "renewed"))
        for i, d in enumerate(days)]), num_shards=4)
    # renewed's next nights: its traffic moved; v2 is trained on the moved data
    write_rows(second, pa.concat_tables([
        _day_rows("renewed", d, 90 + i, shift=3.0)
        for i, d in enumerate(("2026-02-04", "2026-02-05", "2026-02-06"))]), num_shards=4)
    _ok("registry", "init", "--registry", root, "--shards", "4")
    trained = _ok("train", "--data", first, "--registry", root)
    assert trained["published"] == 4, trained
    assert _ok("train", "--data", second, "--registry", root)["published"] == 1
    _ok("registry", "promote", "renewed", "2", "--registry", root)
    publish(Registry.open(root), {"legacy": train_bytes(3)}, "legacy-run")  # no profile
    rng = np.random.default_rng(7)
    traffic = {"calm": _x(rng, 400), "shifted": _x(rng, 400, shift=3.0),
               "holes": _x(rng, 400, holes=HOLES), "renewed": _x(rng, 400, shift=3.0),
               "legacy": rng.normal(size=(200, len(FEATURES)))}
    asyncio.run(_serve(root, traffic))
    run = _tenantry("monitor", "run", "--registry", root, "--json", "--run-id", "night-1")
    assert run.returncode == 0, run.stderr
    return {"root": root, "run": json.loads(run.stdout), "stderr": run.stderr,
            "traffic": traffic}


def _report(world: dict[str, Any], tenant: str) -> dict[str, Any]:
    doc: dict[str, Any] = _ok("monitor", "report", tenant, "--registry", world["root"])
    assert REPORT_KEYS <= set(doc)
    return doc


def test_run_flags_the_drifted_tenants(world: dict[str, Any]) -> None:
    run = world["run"]
    assert RUN_KEYS <= set(run)
    assert run["run_id"] == "night-1" and run["flagged"] == ["holes", "shifted"]
    assert run["tenants"] == 5 and run["rows"] == 4 * 400 + 200  # synthetic ones not logged
    assert run["no_profile"] == 1
    assert "[monitor] bucket" in world["stderr"]  # progress on stderr, JSON alone on stdout


def test_own_distribution_is_not_flagged(world: dict[str, Any]) -> None:
    calm = _report(world, "calm")
    assert not calm["flagged"] and calm["reasons"] == [] and calm["rows"] == 400
    assert all(f["psi"] < 0.2 for f in calm["features"]) and calm["score_psi"] < 0.2


def test_a_shifted_feature_is_flagged_by_name(world: dict[str, Any]) -> None:
    shifted = _report(world, "shifted")
    name = FEATURE_NAMES[SHIFTED]
    assert shifted["flagged"]
    assert [f["name"] for f in shifted["features"] if f["psi"] > 0.2] == [name]
    assert any(r.startswith(f"feature {name}: PSI") for r in shifted["reasons"])


def test_missing_values_are_flagged(world: dict[str, Any]) -> None:
    holes = _report(world, "holes")
    assert holes["flagged"]
    named = {f["name"]: f for f in holes["features"]}
    for j in HOLES:
        f = named[FEATURE_NAMES[j]]
        assert f["missing_rate"] > 0.5 and f["reference_missing_rate"] == 0.0
        assert any(r.startswith(f"feature {FEATURE_NAMES[j]}: missing rate")
                   for r in holes["reasons"])


def test_a_new_version_is_judged_against_its_own_profile(world: dict[str, Any]) -> None:
    renewed = _report(world, "renewed")
    assert (renewed["version"], renewed["flagged"]) == (2, False)
    # The same rows against v1's profile would have been flagged on the moved feature.
    reg = Registry.open(world["root"])
    v1 = reg.profiles([("renewed", 1)])[("renewed", 1)]
    moved = drift(world["traffic"]["renewed"][:, SHIFTED], v1.features[SHIFTED])
    assert moved.psi is not None and moved.psi > 1.0


def test_rerun_of_a_run_id_writes_nothing_more(world: dict[str, Any]) -> None:
    again = _ok("monitor", "run", "--registry", world["root"], "--run-id", "night-1")
    assert again["already_done"] and again["flagged"] == world["run"]["flagged"]
    report = _report(world, "calm")
    assert [r["run_id"] for r in report["runs"]] == ["night-1"]
    prom = (Path(world["root"]) / "monitoring.prom").read_text()
    assert "tenantry_monitor_flagged_tenants 2.0" in prom
    assert 'tenantry_monitor_runs_total{outcome="already_done"} 1.0' in prom


def test_trend_and_user_errors(world: dict[str, Any]) -> None:
    trend = _ok("registry", "trend", "renewed", "--registry", world["root"])
    assert [p["version"] for p in trend["points"]] == [1, 2] and trend["metric"] == "auc"
    assert [p["date"] for p in trend["points"]] == ["2026-02-03", "2026-02-06"]
    for args in (("monitor", "report", "nobody"), ("monitor", "run", "--date", "2020-01-01"),
                 ("registry", "trend", "renewed", "--metric", "nope")):
        done = _tenantry(*args, "--registry", world["root"])
        assert done.returncode == 2 and done.stderr.startswith("tenantry: error:"), done.stderr
        assert "Traceback" not in done.stderr
