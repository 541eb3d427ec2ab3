"""W-train: models/s of the Ray Data training job vs a plain multiprocessing.Pool, same run.

    python benchmarks/w_train.py [--tenants 2000] [--days 8] [--seed 0] [--workdir DIR]

Both sides train the same tenants with the same function (``training.model.train_tenant``:
20 features, 50 trees, depth 5, hist, nthread=1) on the same window. The pool gets the
easiest possible job: every tenant's rows already grouped in the parent's memory (reading
them is not timed), no artifact writes, no registry; its clock covers starting the pool and
training. The Ray Data job
does everything ``tenantry train`` does: plans from the Delta log, reads each shard in its
task, trains, writes and checksums artifacts, scores the gate and publishes one commit. Ray
is started before the clock and warmed as a standing cluster is (workers have imported
xgboost, as the pool's forked children have; Ray Data's detached stats actor exists).
With ``--repeat N`` the two alternate N times and the medians are compared.
Prints both figures and the ratio, and writes JSON to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from registry import Registry
from training.features import DATE_COLUMN, FEATURE_NAMES, LABEL_COLUMN, TENANT_COLUMN
from training.generate import GeneratorConfig, generate
from training.job import run_training
from training.model import ModelSpec, TenantSkipped, train_tenant
from training.settings import TrainingSettings
from training.table import FeatureTable, window_dates

Task = tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _warm(_: int) -> int:
    """Import what a bucket task imports (the pool's children inherit it through fork)."""
    import deltalake  # noqa: F401
    import ray.data  # noqa: F401
    import xgboost  # noqa: F401

    import training.bucket  # noqa: F401

    return os.getpid()


def _pool_train(task: Task) -> tuple[int, float]:
    tenant_id, x_train, y_train, x_hold, y_hold = task
    cpu0 = time.process_time()
    try:
        train_tenant(tenant_id, FEATURE_NAMES, x_train, y_train, x_hold, y_hold, ModelSpec())
        return 1, time.process_time() - cpu0
    except TenantSkipped:
        return 0, time.process_time() - cpu0


def pool_tasks(data: str, date: str, window: int) -> list[Task]:
    """Every tenant's train/holdout arrays, grouped in memory (the pool's head start)."""
    table = FeatureTable(data)
    dates = window_dates(date, window)
    tasks: list[Task] = []
    for shard in sorted(table.shard_row_counts(dates)):
        df = table.read_shard(shard, dates).to_pandas()
        for tenant_id, g in df.groupby(TENANT_COLUMN, sort=True):
            x = g[list(FEATURE_NAMES)].to_numpy(np.float64)
            y = g[LABEL_COLUMN].to_numpy(np.int8)
            hold = (g[DATE_COLUMN] == date).to_numpy()
            tasks.append((str(tenant_id), x[~hold], y[~hold], x[hold], y[hold]))
    return tasks


def run_pool(tasks: list[Task], processes: int) -> dict[str, float]:
    """Train every task on a fresh ``multiprocessing.Pool`` (clock includes its start).

    Children come from a forkserver started before Ray and preloaded with xgboost (as a
    plain script that imports it at the top would fork them), never from a Ray driver.
    """
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["xgboost", "training.model"])
    t0 = time.perf_counter()
    with ctx.Pool(processes) as pool:
        results = list(pool.imap_unordered(_pool_train, tasks, chunksize=1))
        elapsed = time.perf_counter() - t0
    trained = sum(r[0] for r in results)
    return {"trained": trained, "elapsed_s": elapsed, "models_per_s": trained / elapsed,
            "train_cpu_s": sum(r[1] for r in results)}


def start_ray(cpus: int) -> float:
    """Start Ray and warm it as a standing cluster is: workers have imported xgboost and
    Ray Data's (detached) stats actor exists. Returns the seconds this took (not timed)."""
    import ray
    import ray.data

    t0 = time.perf_counter()
    if not ray.is_initialized():
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    warm = ray.remote(num_cpus=1)(_warm)
    ray.get([warm.remote(i) for i in range(cpus * 2)])
    _warm(0)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray.data.range(cpus, override_num_blocks=cpus).map(lambda r: r).take_all()
    return time.perf_counter() - t0


def run_job(data: str, registry: str, date: str, buckets_per_shard: int) -> dict[str, Any]:
    """Run the real job against a fresh registry (Ray already started)."""
    shutil.rmtree(registry, ignore_errors=True)
    Registry.create(registry, num_shards=FeatureTable(data).num_shards() or 16)
    settings = TrainingSettings(progress=False, buckets_per_shard=buckets_per_shard)
    report = run_training(data, registry, date=date, settings=settings)
    return report.to_json(max_failures=0)


def main(argv: list[str] | None = None) -> int:
    """Run W-train and print/write the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tenants", type=int, default=2000)
    ap.add_argument("--days", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mean-rows", type=float, default=1000.0)
    ap.add_argument("--buckets-per-shard", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1, help="alternating pool/job rounds")
    ap.add_argument("--workdir", default=None, help="keep data here (reused if present)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    cpus = os.cpu_count() or 1
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="w_train-"))
    data = str(workdir / f"features-{args.tenants}-{args.days}-{args.seed}")
    t0 = time.perf_counter()
    if not FeatureTable(data).exists():
        generate(data, GeneratorConfig(tenants=args.tenants, days=args.days, seed=args.seed,
                                       mean_rows=args.mean_rows))
    gen_s = time.perf_counter() - t0
    date = FeatureTable(data).latest_date()
    window = TrainingSettings().window_days
    tasks = pool_tasks(data, date, window)
    rows = [len(t[2]) for t in tasks]
    pools, jobs, ray_start_s = [], [], None
    for _ in range(args.repeat):  # alternate, so load from elsewhere hits both alike
        pools.append({**run_pool(tasks, cpus), "loadavg_1m": os.getloadavg()[0]})
        if ray_start_s is None:
            ray_start_s = start_ray(cpus)
        jobs.append({**run_job(data, str(workdir / "registry"), date, args.buckets_per_shard),
                     "loadavg_1m": os.getloadavg()[0]})
    del tasks
    pool_mps = float(np.median([p["models_per_s"] for p in pools]))
    job_mps = float(np.median([j["models_per_s"] for j in jobs]))
    pool, job = pools[-1], jobs[-1]
    ratio = job_mps / pool_mps
    result = {
        "workload": "W-train", "tenants": args.tenants, "days": args.days, "seed": args.seed,
        "cpus": cpus, "window_days": window, "date": date, "generate_s": round(gen_s, 2),
        "train_rows": {"median": float(np.median(rows)), "mean": float(np.mean(rows)),
                       "max": int(np.max(rows)), "min": int(np.min(rows))},
        "repeat": args.repeat, "pool_models_per_s": pool_mps, "job_models_per_s": job_mps,
        "ratio_job_over_pool": ratio, "goal": 0.9, "ray_start_and_warm_s": ray_start_s,
        "pool_runs": pools, "job_runs": jobs,
        "command": " ".join(["python", "benchmarks/w_train.py", *sys.argv[1:]]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"w_train-{args.tenants}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"W-train  {args.tenants} tenants, {cpus} cpus, train rows median "
          f"{result['train_rows']['median']:.0f} max {result['train_rows']['max']}")
    print(f"  pool  multiprocessing.Pool({cpus}): {pool['trained']} models "
          f"{pool_mps:.1f} models/s (median of {args.repeat})")
    print(f"  job   Ray Data run_training:     {job['trained']} models "
          f"{job_mps:.1f} models/s (median of {args.repeat}; published {job['published']})")
    print(f"  ratio job/pool = {ratio:.2f} (goal >= 0.9)   -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
