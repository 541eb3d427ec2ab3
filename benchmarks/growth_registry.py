"""W-growth, the registry and ingress part: see ``benchmarks/growth.py``.

    python benchmarks/growth_registry.py ROOT [--trace]   (one cold snapshot load, as JSON)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from registry import AliasMove, NewVersion, Registry
from registry.gc import collect_garbage
from training.features import FEATURE_NAMES

SHARDS = 16


def tenant_ids(n: int) -> list[str]:
    """N tenant ids shaped like real ones."""
    return [f"tenant-{i:06d}" for i in range(n)]


def synthetic_model() -> tuple[bytes, str | None]:
    """A small real model of the W-train width, and its publish-time forest check."""
    import xgboost as xgb

    from engine.serving.model import publish_check

    rng = np.random.default_rng(0)
    x = rng.random((500, len(FEATURE_NAMES)))
    y = (x[:, 0] + 0.3 * rng.random(500) > 0.6).astype(int)
    booster = xgb.train({"max_depth": 3, "nthread": 1, "objective": "binary:logistic"},
                        xgb.DMatrix(x, y, feature_names=list(FEATURE_NAMES)), 10)
    data = bytes(booster.save_raw("ubj"))
    return data, publish_check(data, booster)["forest_check"]


def publish_run(reg: Registry, run_id: str, tenants: list[str], data: bytes,
                check: str | None, threads: int) -> dict[str, float]:
    """Stage every tenant's artifact, then publish them and move production: one run."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        staged = list(pool.map(lambda t: reg.stage_artifact(t, data, run_id), tenants))
    t1 = time.perf_counter()
    metrics = {"auc": 0.8, "logloss": 0.4, "n_train": 800.0, "n_holdout": 200.0}
    reg.publish(run_id, [NewVersion(s, tuple(FEATURE_NAMES), metrics, data_date=run_id[-10:],
                                    forest_check=check) for s in staged],
                [AliasMove(s.tenant_id, "production", s.version) for s in staged])
    t2 = time.perf_counter()
    return {"stage_s": t1 - t0, "commit_s": t2 - t1, "publish_s": t2 - t0,
            "stage_ms_per_version": 1000 * (t1 - t0) / len(tenants)}


def cold_load(root: str, trace: bool) -> dict[str, Any]:
    """Load a snapshot in this (fresh) process: seconds, or (``trace``) bytes it holds."""
    import gc
    import tracemalloc

    import pandas  # noqa: F401 - imported by the first timestamp to_pylist: not snapshot memory

    from registry.snapshot import RegistrySnapshot

    reg = Registry.open(root)
    for name in ("models", "aliases"):  # table handles are the index's, not the snapshot's
        reg.index.table(name)
    gc.collect()
    if trace:  # tracing slows allocation: the timed load runs in a process of its own
        tracemalloc.start()
    t0 = time.perf_counter()
    snap = RegistrySnapshot(reg.index)
    snap.refresh()
    load_s = time.perf_counter() - t0
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] if trace else 0
    tenants = len(snap.tenants())
    versions = sum(1 for _ in snap.all_versions())
    if not trace:
        return {"load_s": load_s, "tenants": tenants, "versions": versions}
    return {"bytes": held, "bytes_per_tenant": held / tenants, "bytes_per_version": held / versions}


def resolve_latency(snap: Any, tenants: list[str], lookups: int) -> dict[str, float]:
    """Microseconds per lookup, Zipf(1.1) and uniform tenants: ``resolve_version`` (what the
    request path calls: a version number) as ``{zipf,uniform}_{mean,p50,p99}_us``, and
    ``resolve`` (a whole ``ModelVersion``) as ``full_…``."""
    rng = np.random.default_rng(1)
    ranks = np.arange(1, len(tenants) + 1, dtype=np.float64) ** -1.1
    out = {}
    for name, picks in (("zipf", rng.choice(len(tenants), lookups, p=ranks / ranks.sum())),
                        ("uniform", rng.integers(0, len(tenants), lookups))):
        for prefix, fn in (("", snap.resolve_version), ("full_", snap.resolve)):
            times = np.empty(lookups)
            for i, t in enumerate(tenants[j] for j in picks.tolist()):
                t0 = time.perf_counter_ns()
                fn(t)
                times[i] = time.perf_counter_ns() - t0
            out[f"{prefix}{name}_mean_us"] = float(times.mean()) / 1000
            out[f"{prefix}{name}_p50_us"] = float(np.percentile(times, 50)) / 1000
            out[f"{prefix}{name}_p99_us"] = float(np.percentile(times, 99)) / 1000
    return out


def resolve_part(n: int, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Lookup latency over the N-tenant registry the registry part left, loaded fresh."""
    snap = Registry.open(str(workdir / f"registry-{n}")).new_snapshot()
    return resolve_latency(snap, tenant_ids(n), args.lookups)


def gc_part(n: int, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Two ``registry gc --keep 1`` passes over the N-tenant registry the registry part
    left (after its own gc, so nothing is left to remove): what listing costs."""
    root = str(workdir / f"registry-{n}")
    times, report = [], None
    for _ in range(2):
        t0 = time.perf_counter()
        report = collect_garbage(Registry.open(root), keep=1).to_json()
        times.append(time.perf_counter() - t0)
    return {"pass_s": times, "second_pass_s": times[-1], "report": report}


def dir_size(path: Path) -> dict[str, int]:
    """Files and bytes below ``path``."""
    files = [p for p in path.rglob("*") if p.is_file()]
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}


def ingress_update(workdir: Path, changes: int = 50) -> dict[str, float]:
    """Milliseconds to put a model host into a running HAProxy's slot and take it out."""
    from engine.ingress.config import IngressConfig
    from engine.ingress.process import HaproxyProcess
    from engine.ingress.runtime import SlotTarget

    work = workdir / "haproxy"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cfg = IngressConfig(bind_host="127.0.0.1", bind_port=18290,
                        socket_path=str(work / "admin.sock"), control_port=18291)
    proxy = HaproxyProcess(cfg, str(work))
    proxy.start()
    fills, empties = [], []
    try:
        for i in range(changes):
            t0 = time.perf_counter()
            proxy.api.fill(1 + i % 4, SlotTarget("127.0.0.1", 19000 + i))
            t1 = time.perf_counter()
            proxy.api.empty(1 + i % 4)
            fills.append(t1 - t0)
            empties.append(time.perf_counter() - t1)
    finally:
        proxy.stop()
    return {"fill_ms": 1000 * float(np.median(fills)), "empty_ms": 1000 * float(np.median(empties))}


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def registry_part(n: int, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Everything the registry and the ingress report at N tenants."""
    root = workdir / f"registry-{n}"
    shutil.rmtree(root, ignore_errors=True)
    reg = Registry.create(str(root), num_shards=SHARDS)
    tenants = tenant_ids(n)
    data, check = synthetic_model()
    out: dict[str, Any] = {"tenants": n}
    out["run1"] = publish_run(reg, "night-2026-11-30", tenants, data, check, args.threads)
    watcher = Registry.open(str(root)).new_snapshot()
    out["run2"] = publish_run(reg, "night-2026-12-01", tenants, data, check, args.threads)
    out["refresh_s"] = _timed(watcher.refresh)
    out["refresh_moved_ok"] = all(watcher.alias_version(t) == 2 for t in tenants[:: max(1, n // 500)])
    out["refresh_idle_s"] = _timed(watcher.refresh)  # nothing committed since
    publish_run(reg, "hotfix-2026-12-01", tenants[:100], data, check, args.threads)
    out["refresh_100_s"] = _timed(watcher.refresh)  # a run that moved 100 aliases
    out["cold_load"] = {}
    for flags in ([], ["--trace"]):
        load = subprocess.run([sys.executable, __file__, str(root), *flags],
                              capture_output=True, text=True, check=True)
        out["cold_load"].update(json.loads(load.stdout))
    out["index_before_gc"] = dir_size(root / "index")
    t0 = time.perf_counter()
    out["gc"] = collect_garbage(Registry.open(str(root)), keep=1).to_json()
    out["gc_s"] = time.perf_counter() - t0
    out["index_after_gc"] = dir_size(root / "index")
    out["ingress"] = ingress_update(workdir)
    out["loadavg"] = os.getloadavg()
    return out


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description="one cold snapshot load in a fresh process")
    cli.add_argument("root")
    cli.add_argument("--trace", action="store_true", help="bytes held (tracemalloc), not time")
    ns = cli.parse_args()
    print(json.dumps(cold_load(ns.root, ns.trace)))
