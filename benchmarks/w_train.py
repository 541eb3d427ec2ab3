"""W-train: models/s of the Ray Data training job vs a plain multiprocessing.Pool, same run.

    python benchmarks/w_train.py [--tenants 2000] [--days 8] [--seed 0] [--workdir DIR]

Both sides train the same tenants with the same function (``training.model.train_tenant``:
20 features, 50 trees, depth 5, hist, nthread=1) on the same window. The pool gets the
easiest possible job: every tenant's rows already grouped in the parent's memory (reading
them is not timed), no artifact writes, no registry; its clock covers starting the pool and
training. The Ray Data job
does everything ``tenantry train`` does: plans from the Delta log, reads each shard in its
task, trains, writes and checksums artifacts, scores the gate and publishes one commit. Ray
is started (and its workers have imported xgboost, as the pool's forked children have)
before the clock, as on a standing cluster; Ray Data's own start-up is inside the clock.
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


def _pool_train(task: Task) -> int:
    tenant_id, x_train, y_train, x_hold, y_hold = task
    try:
        train_tenant(tenant_id, FEATURE_NAMES, x_train, y_train, x_hold, y_hold, ModelSpec())
        return 1
    except TenantSkipped:
        return 0


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
    """Train every task on a fresh ``multiprocessing.Pool`` (clock includes its start)."""
    import xgboost  # noqa: F401  - a plain script imports it at the top; children inherit

    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(processes) as pool:
        trained = sum(pool.imap_unordered(_pool_train, tasks, chunksize=1))
        elapsed = time.perf_counter() - t0
    return {"trained": trained, "elapsed_s": elapsed, "models_per_s": trained / elapsed}


def run_job(data: str, registry: str, date: str, cpus: int, buckets_per_shard: int) -> dict[str, Any]:
    """Run the real job against a fresh registry on an already-started, warmed Ray."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    warm = ray.remote(num_cpus=1)(_warm)
    ray.get([warm.remote(i) for i in range(cpus * 2)])
    _warm(0)
    shutil.rmtree(registry, ignore_errors=True)
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
    pool = run_pool(tasks, cpus)
    del tasks
    job = run_job(data, str(workdir / "registry"), date, cpus, args.buckets_per_shard)
    ratio = job["models_per_s"] / pool["models_per_s"]
    result = {
        "workload": "W-train", "tenants": args.tenants, "days": args.days, "seed": args.seed,
        "cpus": cpus, "window_days": window, "date": date, "generate_s": round(gen_s, 2),
        "train_rows": {"median": float(np.median(rows)), "mean": float(np.mean(rows)),
                       "max": int(np.max(rows)), "min": int(np.min(rows))},
        "pool": pool, "job": job, "ratio_job_over_pool": ratio, "goal": 0.9,
        "command": " ".join(["python", "benchmarks/w_train.py", *sys.argv[1:]]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"w_train-{args.tenants}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"W-train  {args.tenants} tenants, {cpus} cpus, train rows median "
          f"{result['train_rows']['median']:.0f} max {result['train_rows']['max']}")
    print(f"  pool  multiprocessing.Pool({cpus}): {pool['trained']} models "
          f"{pool['models_per_s']:.1f} models/s ({pool['elapsed_s']:.1f}s)")
    print(f"  job   Ray Data run_training:     {job['trained']} models "
          f"{job['models_per_s']:.1f} models/s ({job['elapsed_s']:.1f}s, "
          f"published {job['published']})")
    print(f"  ratio job/pool = {ratio:.2f} (goal >= 0.9)   -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
