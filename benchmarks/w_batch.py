"""W-batch: rows/s of ``tenantry score`` vs a plain multiprocessing.Pool of XGBoost, same run.

    python benchmarks/w_batch.py [--tenants 2000] [--days 8] [--repeat 3] [--workdir DIR]

Data and models come from W-train's preparation (``benchmarks/w_train.py``): the generator's
tenants, a registry created as ``tenantry registry init`` does, trained by the real job
(``tenantry train``) on the latest day, with the publish-time forest check ``tenantry``
registers (``engine.cli.register_checks``), so the job's loads skip the self-check; both are
reused from ``--workdir`` when present (``forest_checked`` counts the scored versions that
carry the check: a registry trained before it existed has none).
Both sides then score the same day's rows of every tenant with a production model:

- **job**: ``engine.batch.run_scoring`` on Ray Data (Ray started and warmed before the clock,
  as a standing cluster is). Its clock covers everything ``tenantry score`` does: plan from
  the Delta log and the registry, read each shard's files in its task, load every model
  through the registry (sha256 verified; the forest saved at publish read as serving reads
  it), walk all the shard's tenants' forests together over the shard's columns, write
  Parquet, commit.
- **pool**: ``multiprocessing.Pool(os.cpu_count())`` whose workers load each tenant's Booster
  from the registry (``Registry.load_booster``: read, sha256, load) and call
  ``inplace_predict`` on the tenant's rows, handed over from the parent's memory (reading
  them is not timed); predictions come back to the parent. Its clock covers starting the
  pool (as W-train's does) and all of that; the rate after the workers are up is reported
  too (``pool_rows_per_s_after_start``), since the start is a fixed cost small runs feel.

Every process runs with ``OMP_NUM_THREADS=1`` (set here unless given), as Ray sets it for
its 1-CPU task workers: without it, on a busy 2-core box, each ``Booster.load_model`` in a
pool worker took 4-12 ms instead of ~0.35 ms (OpenMP threads waking per call), which would
flatter the job. Ray runs its task workers at niceness 15 (``RAY_worker_niceness``); the
pool's workers are set to the same, so on a shared box both yield alike to other work.

Also measured, per call at the median tenant's row count, on one model in this process:
model load (serving's ``load_model`` of the version as published and of the same version
without its publish-time record, i.e. with the load-time self-check; compile vs Booster) and
predict (the batch walk of one forest alone and, per tenant, of 110 tenants' forests
walked together as a bucket walks them; serving's ``predict``; ``inplace_predict``), to
show where the ratio comes from; and each side's work CPU (:func:`summary`) with the load
average before and after every run. The default size is DESIGN.md's: W-train's 2,000
tenants, one day (~236k rows), where neither side's start-up dominates. Prints both rates
and the ratio; writes ``benchmarks/results/w_batch.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before xgboost loads OpenMP; see the docstring

import argparse
import dataclasses
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import w_train  # W-train's data preparation, imported rather than copied

from engine.batch import ScoreSettings, run_scoring
from engine.cli import register_checks
from engine.forest import compile_forest, stack_forests, walk_forest, walk_stack, widen
from engine.serving.model import load_model
from registry import ModelVersion, Registry
from training.features import DATE_COLUMN, TENANT_COLUMN
from training.generate import GeneratorConfig, generate
from training.table import FeatureTable

Task = tuple[str, ModelVersion, np.ndarray]
_REGISTRY: Registry | None = None


def _pool_init(root: str, niceness: int) -> None:
    global _REGISTRY
    os.nice(niceness - os.nice(0))  # Ray's task workers' priority (it renices them)
    _REGISTRY = Registry.open(root)


def _pool_score(task: Task) -> tuple[str, np.ndarray, float]:
    tenant_id, mv, x = task
    assert _REGISTRY is not None
    cpu0 = time.process_time()
    booster = _REGISTRY.load_booster(mv)  # read + sha256 + Booster.load_model
    pred = booster.inplace_predict(x, validate_features=False)
    return tenant_id, pred, time.process_time() - cpu0


def pool_tasks(data: str, reg: Registry, date: str) -> list[Task]:
    """Every scored tenant's rows of ``date`` (model column order) and production version."""
    table = FeatureTable(data)
    production = reg.production_versions()
    tasks: list[Task] = []
    for shard in sorted(table.shard_row_counts([date])):
        df = table.read_shard(shard, [date]).to_pandas()
        for tenant_id, g in df[df[DATE_COLUMN] == date].groupby(TENANT_COLUMN, sort=True):
            mv = production.get(str(tenant_id))
            if mv is not None:
                x = g[list(mv.feature_names)].to_numpy(np.float32)
                tasks.append((str(tenant_id), mv, x))
    return tasks


def run_pool(tasks: list[Task], root: str, processes: int, niceness: int) -> dict[str, float]:
    """Score every task on a fresh forkserver pool (clock includes its start)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["xgboost", "registry"])
    t0 = time.perf_counter()
    with ctx.Pool(processes, initializer=_pool_init, initargs=(root, niceness)) as pool:
        pool.map(_pool_ready, range(processes), chunksize=1)  # workers up and initialized
        ready = time.perf_counter() - t0
        results = list(pool.imap_unordered(_pool_score, tasks, chunksize=8))
        elapsed = time.perf_counter() - t0
    rows = sum(len(p) for _, p, _ in results)
    return {"rows": rows, "tenants": len(results), "elapsed_s": elapsed,
            "rows_per_s": rows / elapsed, "start_s": ready,
            "rows_per_s_after_start": rows / (elapsed - ready),
            "work_cpu_s": sum(c for _, _, c in results)}


def _pool_ready(_: int) -> int:
    return os.getpid()


def _warm_batch(_: int) -> int:
    """Import what a scoring task imports; returns the worker's niceness."""
    import engine.batch.task  # noqa: F401

    return os.nice(0)


def run_job(data: str, root: str, date: str, out: str, k: int) -> dict[str, Any]:
    """One ``tenantry score`` run into a fresh output table (Ray already started)."""
    shutil.rmtree(out, ignore_errors=True)
    report = run_scoring(data, root, out, date=date, run_id=f"w-batch-{k}",
                         settings=ScoreSettings(progress=False))
    doc = report.to_json(max_failures=0)
    return {k2: doc[k2] for k2 in ("rows", "tenants", "failed_count", "failed_reasons",
                                   "rows_per_s", "elapsed_s", "buckets", "timings")}


def per_call(tasks: list[Task], reg: Registry) -> dict[str, float]:
    """Microseconds per call for the median tenant, one model, this process."""
    sizes = [len(t[2]) for t in tasks]
    _, mv, x = tasks[int(np.argsort(sizes)[len(sizes) // 2])]
    data = reg.read_artifact(mv)
    forest, booster = compile_forest(data), reg.load_booster(mv)

    def us(fn: Any, n: int = 200) -> float:
        fn()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n * 1e6

    return {"rows": len(x), "read_verify_us": us(lambda: reg.read_artifact(mv)),
            "load_model_us": us(lambda: load_model(reg, mv)),
            "load_model_selfcheck_us": us(lambda: load_model(
                reg, dataclasses.replace(mv, forest_check=None))),
            "compile_forest_us": us(lambda: compile_forest(data)),
            "booster_load_us": us(lambda: reg.load_booster(mv)),
            "walk_us": us(lambda: walk_forest(forest, x)),
            "forest_predict_us": us(lambda: forest.predict(x)),
            "inplace_predict_us": us(lambda: booster.inplace_predict(
                x, validate_features=False)),
            "stacked_walk_us_per_tenant": _stacked_walk_us(tasks[:110], reg)}


def _stacked_walk_us(tasks: list[Task], reg: Registry) -> float:
    """Microseconds per tenant when ``tasks``' forests walk together, as a bucket's do."""
    forests = [compile_forest(reg.read_artifact(mv)) for _, mv, _ in tasks]
    keep = [i for i, f in enumerate(forests) if f.roots.size == forests[0].roots.size]
    names = list(tasks[0][1].feature_names)
    stack = stack_forests([forests[i] for i in keep],
                          [np.array([names.index(n) for n in tasks[i][1].feature_names])
                           for i in keep], len(names))
    x = np.concatenate([tasks[i][2] for i in keep])  # every tenant has W-train's features
    wide, rows = widen(x), np.arange(len(x))
    models = np.repeat(np.arange(len(keep)), [len(tasks[i][2]) for i in keep])
    walk_stack(stack, wide, rows, models)
    t0 = time.perf_counter()
    for _ in range(20):
        walk_stack(stack, wide, rows, models)
    return (time.perf_counter() - t0) / 20 / len(keep) * 1e6


def _rounds(tasks: list[Task], data: str, root: str, date: str, workdir: Path, repeat: int,
            niceness: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``repeat`` pool/job rounds, alternating so load from elsewhere hits both alike."""
    cpus = os.cpu_count() or 1
    pools, jobs = [], []
    for k in range(repeat):
        before = os.getloadavg()[0]
        pools.append({**run_pool(tasks, root, cpus, niceness), "loadavg_1m_before": before,
                      "loadavg_1m": os.getloadavg()[0]})
        before = os.getloadavg()[0]
        jobs.append({**run_job(data, root, date, str(workdir / "scores"), k),
                     "loadavg_1m_before": before, "loadavg_1m": os.getloadavg()[0]})
    return pools, jobs


def summary(tasks: list[Task], pools: list[dict[str, Any]],
            jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds: both rates, their ratios, and each side's work CPU.

    Work CPU is what each side's own code spent (process time): the pool's workers loading
    Boosters and predicting (not the parent's pickling nor the pool's start), the job's
    tasks reading, loading, walking and writing (not Ray's scheduling nor plan and commit).
    It is less sensitive than the wall clock to other work on a shared box.
    """
    pool_rps = float(np.median([p["rows_per_s"] for p in pools]))
    pool_warm = float(np.median([p["rows_per_s_after_start"] for p in pools]))
    job_rps = float(np.median([j["rows_per_s"] for j in jobs]))
    pool_cpu = float(np.median([p["work_cpu_s"] for p in pools]))
    job_cpu = float(np.median([j["timings"]["tasks_cpu_s"] for j in jobs]))
    sizes = [len(t[2]) for t in tasks]
    return {
        "scored_tenants": len(tasks), "rows": int(sum(sizes)),
        "rows_per_tenant": {"median": float(np.median(sizes)), "mean": float(np.mean(sizes)),
                            "max": int(np.max(sizes))},
        "forest_checked": sum(t[1].forest_check is not None for t in tasks),
        "job_rows_per_s": job_rps, "pool_rows_per_s": pool_rps,
        "ratio_job_over_pool": job_rps / pool_rps, "goal": 2.0,
        "pool_rows_per_s_after_start": pool_warm,
        "ratio_job_over_pool_after_start": job_rps / pool_warm,
        "pool_work_cpu_s": pool_cpu, "job_work_cpu_s": job_cpu,
        "ratio_work_cpu_pool_over_job": pool_cpu / job_cpu,
        "loadavg_1m": [r["loadavg_1m"] for r in pools + jobs],
    }


def report(result: dict[str, Any], out: str) -> None:
    """Print the figures."""
    cpus, calls = result["cpus"], result["per_call_median_tenant"]
    print(f"W-batch  {result['tenants']} tenants, {cpus} cpus, {result['date']}: "
          f"{result['rows']} rows of {result['scored_tenants']} tenants (median "
          f"{result['rows_per_tenant']['median']:.0f} rows; {result['forest_checked']} checked "
          f"at publish); load average {min(result['loadavg_1m']):.1f}-"
          f"{max(result['loadavg_1m']):.1f}")
    print(f"  pool  multiprocessing.Pool({cpus}) + inplace_predict: "
          f"{result['pool_rows_per_s']:,.0f} rows/s ({result['pool_rows_per_s_after_start']:,.0f} "
          f"rows/s once its workers are up); work CPU {result['pool_work_cpu_s']:.2f} s")
    job = result["job_runs"][-1]
    print(f"  job   tenantry score (Ray Data):               {result['job_rows_per_s']:,.0f} "
          f"rows/s ({job['tenants']} tenants, {job['buckets']} buckets); work CPU "
          f"{result['job_work_cpu_s']:.2f} s")
    print(f"  ratio job/pool = {result['ratio_job_over_pool']:.2f} (goal >= 2; against the pool "
          f"once up: {result['ratio_job_over_pool_after_start']:.2f}; work CPU pool/job "
          f"{result['ratio_work_cpu_pool_over_job']:.2f})   -> {out}")
    t = job["timings"]
    print("  job stages (last run, s): plan {:.2f}, buckets {:.2f} (in tasks: read {:.2f}, load "
          "{:.2f}, score incl. load {:.2f}, write {:.2f}, CPU {:.2f}), commit {:.3f}".format(
              t["plan_s"], t["buckets_s"], t["tasks_read_s"], t.get("tasks_load_s", 0.0),
              t["tasks_score_s"], t["tasks_write_s"], t["tasks_cpu_s"], t["commit_s"]))
    print("  per call, median tenant ({rows} rows): serving load_model {load_model_us:.0f} us "
          "(read+sha256 {read_verify_us:.0f}, compile {compile_forest_us:.0f}; "
          "{load_model_selfcheck_us:.0f} us with the load-time self-check) vs "
          "registry Booster load {booster_load_us:.0f} us; walk {walk_us:.0f} us alone, "
          "{stacked_walk_us_per_tenant:.0f} us per tenant walked with 110 others (as in a "
          "bucket), forest.predict {forest_predict_us:.0f} us, inplace_predict "
          "{inplace_predict_us:.0f} us".format(**calls))


def main(argv: list[str] | None = None) -> int:
    """Run W-batch and print/write the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tenants", type=int, default=2000, help="DESIGN.md's W-train tenants")
    ap.add_argument("--days", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mean-rows", type=float, default=1000.0)
    ap.add_argument("--repeat", type=int, default=3, help="alternating pool/job rounds")
    ap.add_argument("--workdir", default=None, help="keep data and registry here (reused)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "w_batch.json"))
    args = ap.parse_args(argv)
    cpus = os.cpu_count() or 1
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="w_batch-"))
    data = str(workdir / f"features-{args.tenants}-{args.days}-{args.seed}")
    root = str(workdir / "registry")
    if not FeatureTable(data).exists():
        generate(data, GeneratorConfig(tenants=args.tenants, days=args.days, seed=args.seed,
                                       mean_rows=args.mean_rows))
    date = FeatureTable(data).latest_date()
    ray_s = w_train.start_ray(cpus)
    import ray

    niceness = max(ray.get([ray.remote(num_cpus=1)(_warm_batch).remote(i)
                            for i in range(cpus * 2)]))
    trained: dict[str, Any] = {}
    register_checks()  # as `tenantry train` does
    if not (Path(root) / "_tenantry.json").exists() or not Registry.open(root).list_tenants():
        trained = w_train.run_job(data, root, date, 1)  # registry init + tenantry train
    reg = Registry.open(root)
    tasks = pool_tasks(data, reg, date)
    pools, jobs = _rounds(tasks, data, root, date, workdir, args.repeat, niceness)
    result = {
        "workload": "W-batch", "tenants": args.tenants, "days": args.days, "seed": args.seed,
        "cpus": cpus, "date": date, **summary(tasks, pools, jobs), "repeat": args.repeat,
        "per_call_median_tenant": per_call(tasks, reg), "ray_start_and_warm_s": ray_s,
        "worker_niceness": niceness, "trained": trained.get("trained"),
        "pool_runs": pools, "job_runs": jobs,
        "command": " ".join(["python", "benchmarks/w_batch.py", *sys.argv[1:]]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    report(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
