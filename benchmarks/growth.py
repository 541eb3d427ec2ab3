"""W-growth: what 1k, 10k and 100k tenants cost the registry, the ingress and serving.

    python benchmarks/growth.py [--tenants 1000,10000,100000] [--parts registry,serve,train]
                                [--workdir /tmp/tenantry-growth] [--hold 3]

Per scale N (``registry`` part), in a registry of its own under ``--workdir``: one small
real XGBoost model published for N tenants (run 1), then a night's run that publishes a
new version of every tenant and moves every production alias (run 2). Reported: each run's
publish time (staging the artifacts, with ``--threads`` writers as the job's tasks do, and
the one index commit); the refresh of a snapshot loaded after run 1 that picks run 2 up;
the snapshot's cold load after run 2 in a fresh process (time, and bytes per tenant held
by tracemalloc, which sees numpy's buffers); resolve latency (Zipf(1.1) and uniform
tenants); one ``registry gc`` pass and the index's files before and after it; the time to
move a model host in or out of a running HAProxy's slot (runtime API, as the ingress does).
``serve``: ``tenantry serve`` (2 replicas) over that registry through W-serve's machinery
(``benchmarks/w_serve.py``), its cache sized so Zipf(1.1) traffic hits ``--hit-rate`` at
every N; the highest rate with p99 <= 50 ms. ``train``: the real training job over 10k
generated tenants (W-train's data, 8 days), end to end. Writes
``benchmarks/results/growth.json`` and prints a markdown table.
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from registry import AliasMove, NewVersion, Registry
from registry.gc import collect_garbage
from training.features import FEATURE_NAMES

SHARDS = 16
KEYS = ("tenants", "snapshot_load_s", "snapshot_bytes_per_tenant", "refresh_s", "resolve_us",
        "serve_rps")


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

    from registry.snapshot import RegistrySnapshot

    import pandas  # noqa: F401 - imported by the first timestamp to_pylist: not snapshot memory

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
    """p50/p99 of one ``resolve`` in microseconds, Zipf(1.1) and uniform tenants."""
    rng = np.random.default_rng(1)
    ranks = np.arange(1, len(tenants) + 1, dtype=np.float64) ** -1.1
    out = {}
    for name, picks in (("zipf", rng.choice(len(tenants), lookups, p=ranks / ranks.sum())),
                        ("uniform", rng.integers(0, len(tenants), lookups))):
        times = np.empty(lookups)
        for i, t in enumerate(tenants[j] for j in picks.tolist()):
            t0 = time.perf_counter_ns()
            snap.resolve(t)
            times[i] = time.perf_counter_ns() - t0
        out[f"{name}_mean_us"] = float(times.mean()) / 1000
        out[f"{name}_p50_us"] = float(np.percentile(times, 50)) / 1000
        out[f"{name}_p99_us"] = float(np.percentile(times, 99)) / 1000
    return out


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
    t0 = time.perf_counter()
    watcher.refresh()
    out["refresh_s"] = time.perf_counter() - t0
    out["refresh_moved_ok"] = all(watcher.alias_version(t) == 2 for t in tenants[:: max(1, n // 500)])
    out["cold_load"] = {}
    for flags in ([], ["--trace"]):
        load = subprocess.run([sys.executable, __file__, "--cold-load", str(root), *flags],
                              capture_output=True, text=True, check=True)
        out["cold_load"].update(json.loads(load.stdout))
    out["resolve"] = resolve_latency(watcher, tenants, args.lookups)
    out["index_before_gc"] = dir_size(root / "index")
    t0 = time.perf_counter()
    out["gc"] = collect_garbage(Registry.open(str(root)), keep=1).to_json()
    out["gc_s"] = time.perf_counter() - t0
    out["index_after_gc"] = dir_size(root / "index")
    out["ingress"] = ingress_update(workdir)
    out["loadavg"] = os.getloadavg()
    return out


def cache_models_for(n: int, hit_rate: float, replicas: int = 2) -> int:
    """Models per replica so that Zipf(1.1) over N tenants hits ``hit_rate`` (hash-split)."""
    p = np.arange(1, n + 1, dtype=np.float64) ** -1.1
    top = int(np.searchsorted(np.cumsum(p) / p.sum(), hit_rate)) + 1
    return max(1, -(-top // replicas))


def serve_part(n: int, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """W-serve's tenantry measurement over the N-tenant registry, at equal hit rate."""
    import w_serve

    from engine.loadtest.tenants import registry_tenants
    from engine.serving.model import load_model

    root = str(workdir / f"registry-{n}")
    reg = Registry.open(root)
    tenant_set = registry_tenants(root, None)
    cache_models = cache_models_for(n, args.hit_rate)
    nbytes = load_model(reg, reg.snapshot().resolve(tenant_set.ids[0])).nbytes
    cache_mb = 1.05 * cache_models * nbytes / 2**20
    proc = w_serve.start("tenantry", root, cache_models, cache_mb,
                         (tenant_set.ids[-1], tenant_set.widths[-1]), workdir / "logs")
    ns = argparse.Namespace(hold=args.hold, seed=0, workers=1, quick=False,
                            fixed_rate=args.fixed_rate)
    try:
        res = w_serve.measure("tenantry", tenant_set, ns, None)
    finally:
        w_serve.stop(proc, graceful=True)
    return {"cache_models_per_replica": cache_models, "cache_mb_per_replica": cache_mb,
            "max_rps_within_slo": res["max_rps_within_slo"], "hit_rate": res.get("hit_rate"),
            "fixed_rate": res["fixed_rate"], "stages": res["stages"],
            "loadavg": os.getloadavg()}


def train_part(workdir: Path) -> dict[str, Any]:
    """The real nightly job over 10k generated tenants, end to end (Ray started before)."""
    from w_train import run_job, start_ray

    from training.generate import GeneratorConfig, generate
    from training.table import FeatureTable

    data = str(workdir / "train" / "features-10000")
    if not FeatureTable(data).exists():
        generate(data, GeneratorConfig(tenants=10_000, days=8, seed=0, mean_rows=1000.0))
    start_ray(os.cpu_count() or 1)
    before = os.getloadavg()
    t0 = time.perf_counter()
    report = run_job(data, str(workdir / "train" / "registry"),
                     FeatureTable(data).latest_date(), 1)
    return {"train_10k_s": time.perf_counter() - t0, "report": report,
            "loadavg_before": before, "loadavg_after": os.getloadavg()}


def markdown(results: dict[str, Any]) -> str:
    """The results as a markdown table (one column per scale)."""
    rows = [("snapshot cold load (s)", "snapshot_load_s", ".2f"),
            ("snapshot bytes per tenant", "snapshot_bytes_per_tenant", ".0f"),
            ("refresh after a night (s)", "refresh_s", ".2f"),
            ("resolve p50 (us, Zipf)", "resolve_us", ".2f"),
            ("publish one run (s)", "publish_s", ".1f"),
            ("gc pass (s)", "gc_s", ".1f"),
            ("ingress slot fill (ms)", "ingress_fill_ms", ".2f"),
            ("W-serve max rps, p99<=50ms", "serve_rps", ".0f")]
    head = "| | " + " | ".join(f"{n:,}" for n in results["tenants"]) + " |"
    lines = [head, "|---" * (len(results["tenants"]) + 1) + "|"]
    for label, key, spec in rows:
        cells = ["n/a" if v is None else format(v, spec) for v in results.get(key, [])]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if results.get("train_10k_s") is not None:
        lines.append(f"\nnightly training run, 10k tenants: {results['train_10k_s']:.0f} s")
    return "\n".join(lines)


def summarise(scales: list[int], reg: dict[int, Any], serve: dict[int, Any],
              train: dict[str, Any] | None) -> dict[str, Any]:
    """The growth.json document: lists aligned with ``tenants``, then the details."""
    def col(source: dict[int, Any], path: tuple[str, ...]) -> list[Any]:
        out = []
        for n in scales:
            value: Any = source.get(n)
            for key in path:
                value = None if value is None else value.get(key)
            out.append(value)
        return out

    return {"tenants": scales, "snapshot_load_s": col(reg, ("cold_load", "load_s")),
            "snapshot_bytes_per_tenant": col(reg, ("cold_load", "bytes_per_tenant")),
            "refresh_s": col(reg, ("refresh_s",)), "resolve_us": col(reg, ("resolve", "zipf_p50_us")),
            "resolve_uniform_us": col(reg, ("resolve", "uniform_p50_us")),
            "serve_rps": col(serve, ("max_rps_within_slo",)),
            "publish_s": col(reg, ("run2", "publish_s")), "gc_s": col(reg, ("gc_s",)),
            "ingress_fill_ms": col(reg, ("ingress", "fill_ms")),
            "train_10k_s": train["train_10k_s"] if train else None,
            "registry": {str(n): v for n, v in reg.items()},
            "serve": {str(n): v for n, v in serve.items()}, "train": train}


def main(argv: list[str] | None = None) -> int:
    """Run the parts asked for and write the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tenants", default="1000,10000,100000")
    ap.add_argument("--parts", default="registry,serve,train")
    ap.add_argument("--workdir", default="/tmp/tenantry-growth")
    ap.add_argument("--threads", type=int, default=4, help="artifact writers while staging")
    ap.add_argument("--lookups", type=int, default=100_000)
    ap.add_argument("--hit-rate", type=float, default=0.8)
    ap.add_argument("--hold", type=float, default=3.0, help="seconds per load stage")
    ap.add_argument("--fixed-rate", type=float, default=500.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "growth.json"))
    ap.add_argument("--cold-load", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.cold_load:
        print(json.dumps(cold_load(args.cold_load, args.trace)))
        return 0
    try:
        scales = [int(s) for s in args.tenants.split(",") if s]
    except ValueError:
        ap.error(f"--tenants takes comma-separated counts, not {args.tenants!r}")
    parts = set(args.parts.split(","))
    if not parts <= {"registry", "serve", "train"}:
        ap.error(f"unknown parts {sorted(parts - {'registry', 'serve', 'train'})}")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    reg, serve = {}, {}
    for n in scales:
        if "registry" in parts:
            print(f"== registry {n:,}", flush=True)
            reg[n] = registry_part(n, workdir, args)
            print(json.dumps(reg[n], default=str), flush=True)
        if "serve" in parts:
            print(f"== serve {n:,}", flush=True)
            serve[n] = serve_part(n, workdir, args)
            print(json.dumps({k: v for k, v in serve[n].items() if k != "stages"}), flush=True)
    train = train_part(workdir) if "train" in parts else None
    results = summarise(scales, reg, serve, train)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
