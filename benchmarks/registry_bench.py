"""Registry benchmark: bulk publish, snapshot resolve, publish-to-visible lag, index reads.

One command (defaults reproduce the issue's workload)::

    .venv/bin/python benchmarks/registry_bench.py [--versions 10000] \
        [--out benchmarks/results/registry.json]

1. Stage ``--versions`` artifacts (one real XGBoost model's bytes for all, a tenant each),
   publish them as ONE run; staging and publishing timed apart. 2. Resolve tenants from a
   snapshot. 3. Publish-to-visible, seen by a watcher process polling ``refresh()`` as a
   replica would. 4. Latest-row read (fresh open + DataFusion query) of an index fragmented
   by small publishes, before and after ``registry.gc.collect_garbage`` (compaction +
   checkpoint). Everything goes through the library.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from registry import AliasMove, NewVersion, Registry, StagedArtifact
from registry.delta import sql_str
from registry.gc import collect_garbage

FEATURES = tuple(f"f{i:02d}" for i in range(20))


def model_bytes(trees: int, depth: int, rows: int = 1000, seed: int = 0) -> bytes:
    """UBJSON bytes of one small real XGBoost model (the W-train shape by default)."""
    import numpy as np
    import xgboost as xgb

    rng = np.random.default_rng(seed)
    x = rng.random((rows, len(FEATURES)))
    y = (x[:, 0] + 0.3 * rng.random(rows) > 0.6).astype(int)
    booster = xgb.train({"max_depth": depth, "nthread": 1, "tree_method": "hist", "seed": seed},
                        xgb.DMatrix(x, y, feature_names=list(FEATURES)), trees)
    return bytes(booster.save_raw("ubj"))


def _nv(staged: StagedArtifact) -> NewVersion:
    return NewVersion(staged, FEATURES, {"auc": 0.8, "logloss": 0.4}, data_date="2026-11-28")


def _publish(reg: Registry, run_id: str, tenants: list[str], data: bytes) -> list[int]:
    staged = [reg.stage_artifact(t, data, run_id) for t in tenants]
    reg.publish(run_id, [_nv(s) for s in staged],
                [AliasMove(s.tenant_id, "production", s.version) for s in staged])
    return [s.version for s in staged]


def _pct(values: list[float], q: float) -> float:
    return round(sorted(values)[min(len(values) - 1, int(q * len(values)))], 3)


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


def _med(seconds: list[float]) -> float:
    return _ms(statistics.median(seconds))


def bench_bulk(reg: Registry, tenants: list[str], data: bytes) -> dict[str, Any]:
    """Stage one version per tenant, then publish them all as one run."""
    t0 = time.perf_counter()
    staged = [reg.stage_artifact(t, data, "bulk-0001") for t in tenants]
    stage_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = reg.publish("bulk-0001", [_nv(s) for s in staged],
                         [AliasMove(s.tenant_id, "production", s.version) for s in staged])
    publish_s = time.perf_counter() - t0
    n = len(tenants)
    return {"versions": n, "artifact_bytes": len(data), "published": result.published,
            "stage_s": round(stage_s, 3), "stage_ms_per_version": _ms(stage_s / n),
            "stage_versions_per_s": round(n / stage_s, 1),
            "publish_s": round(publish_s, 3), "publish_note": "models, aliases, runs commits"}


def bench_resolve(reg: Registry, tenants: list[str], lookups: int) -> dict[str, Any]:
    """Cold snapshot build, then per-lookup cost of ``RegistrySnapshot.resolve``."""
    t0 = time.perf_counter()
    snap = reg.new_snapshot()
    build_s = time.perf_counter() - t0
    keys = random.Random(0).choices(tenants, k=lookups)
    resolve = snap.resolve
    for key in keys[:1000]:  # warm up
        resolve(key)
    t0 = time.perf_counter_ns()
    for key in keys:
        resolve(key)
    mean_us = (time.perf_counter_ns() - t0) / lookups / 1e3
    prod = snap.production_map()  # reference: the bare dict lookup under resolve()
    t0 = time.perf_counter_ns()
    for key in keys:
        prod[key]
    dict_us = (time.perf_counter_ns() - t0) / lookups / 1e3
    singles, clock = [], time.perf_counter_ns
    for key in keys[:20000]:
        s = clock()
        resolve(key)
        singles.append((clock() - s) / 1e3)
    return {"tenants": len(snap.tenants()), "snapshot_build_s": round(build_s, 3),
            "lookups": lookups, "resolve_mean_us": round(mean_us, 3),
            "resolve_p50_us": _pct(singles, 0.5), "resolve_p99_us": _pct(singles, 0.99),
            "plain_dict_lookup_mean_us": round(dict_us, 3)}


def _watch(root: str, poll_s: float, targets: Any, seen: Any) -> None:
    """Watcher process: refresh a snapshot until each target (tenant, version) is visible."""
    reg = Registry.open(root)
    snap = reg.new_snapshot()
    seen.put(("ready", 0, time.time(), 0.0))
    while True:
        target = targets.get()
        if target is None:
            return
        tenant, version = target
        while True:
            started = time.perf_counter()
            snap.refresh()
            cost = time.perf_counter() - started
            if snap.alias_version(tenant) == version:
                seen.put((tenant, version, time.time(), cost))
                break
            time.sleep(poll_s)


def bench_visibility(reg: Registry, tenants: list[str], data: bytes, trials: int,
                     poll_s: float) -> dict[str, Any]:
    """Time from a publish to a snapshot in another process seeing it."""
    ctx = mp.get_context("spawn")
    targets, seen = ctx.Queue(), ctx.Queue()
    watcher = ctx.Process(target=_watch, args=(reg.root, poll_s, targets, seen), daemon=True)
    watcher.start()
    seen.get(timeout=120)
    from_start, from_return, publish_s, refresh_s = [], [], [], []
    for i in range(trials):
        tenant = tenants[i % len(tenants)]
        version = len(reg.snapshot(refresh=False).versions(tenant)) + 1
        targets.put((tenant, version))
        time.sleep(0.05)  # let the watcher settle into polling
        t_start = time.time()
        assert _publish(reg, f"vis-{i:04d}", [tenant], data) == [version]
        t_return = time.time()
        _, _, t_seen, cost = seen.get(timeout=120)
        reg.snapshot()
        from_start.append(t_seen - t_start)
        from_return.append(t_seen - t_return)
        publish_s.append(t_return - t_start)
        refresh_s.append(cost)
    targets.put(None)
    watcher.join(timeout=30)
    # A version is visible once its aliases commit lands, before publish() returns.
    return {"trials": trials, "watcher_poll_ms": _ms(poll_s), "publish_ms_p50": _med(publish_s),
            "visible_after_publish_start_ms_p50": _med(from_start),
            "visible_after_publish_start_ms_max": _ms(max(from_start)),
            "visible_after_publish_return_ms_p50": _med(from_return),
            "refresh_that_saw_it_ms_p50": _med(refresh_s)}


def latest_row(root: str, tenant: str, repeats: int) -> dict[str, Any]:
    """Fresh open + query of one tenant's newest index row, ``repeats`` times."""
    opens, queries, totals, warm = [], [], [], []
    newest = files = log_version = -1
    where = f"tenant_id = {sql_str(tenant)}"
    for _ in range(repeats):
        t0 = time.perf_counter()
        reg = Registry.open(root)
        dt = reg.index.table("models")
        t1 = time.perf_counter()
        rows = reg.index.query("models", where=where, refresh=False)
        t2 = time.perf_counter()
        newest = max(rows.column("version").to_pylist())
        opens.append(t1 - t0)
        queries.append(t2 - t1)
        totals.append(t2 - t0)
        t3 = time.perf_counter()
        reg.index.query("models", where=where)
        warm.append(time.perf_counter() - t3)
        files, log_version = len(dt.file_uris()), dt.version()
    return {"newest_version": newest, "data_files": files, "table_version": log_version,
            "open_ms_p50": _med(opens), "query_ms_p50": _med(queries),
            "fresh_total_ms_p50": _med(totals), "fresh_total_ms_min": _ms(min(totals)),
            "warm_query_ms_p50": _med(warm)}


def bench_index(reg: Registry, tenants: list[str], data: bytes, small: int,
                repeats: int) -> dict[str, Any]:
    """Fragment the index with ``small`` one-version publishes; read before/after gc."""
    t0 = time.perf_counter()
    for i in range(small):
        _publish(reg, f"small-{i:04d}", [tenants[i % len(tenants)]], data)
    small_s = time.perf_counter() - t0
    probe = tenants[0]
    before = latest_row(reg.root, probe, repeats)
    t0 = time.perf_counter()
    report = collect_garbage(reg, keep=5)
    gc_s = time.perf_counter() - t0
    after = latest_row(reg.root, probe, repeats)
    return {"small_publishes": small, "small_publish_ms_mean": _ms(small_s / max(small, 1)),
            "probe_tenant": probe, "before_gc": before, "after_gc": after,
            "gc_s": round(gc_s, 3), "gc": report.to_json()}


def _table(res: dict[str, Any]) -> str:
    b, r, v, ix = res["bulk"], res["resolve"], res["visibility"], res["index"]

    def read(ph: dict[str, Any]) -> str:
        return (f"fresh {ph['fresh_total_ms_p50']:.1f} ms (open {ph['open_ms_p50']:.1f} + "
                f"query {ph['query_ms_p50']:.1f}); warm {ph['warm_query_ms_p50']:.1f} ms")

    pre, post = ix["before_gc"], ix["after_gc"]
    rows = [
        ("stage artifacts", f"{b['versions']} x {b['artifact_bytes'] / 1e3:.0f} KB",
         f"{b['stage_s']:.2f} s ({b['stage_versions_per_s']:.0f}/s)"),
        ("publish (one run)", f"{b['published']} versions", f"{b['publish_s']:.2f} s"),
        ("snapshot build (cold)", f"{r['tenants']} tenants", f"{r['snapshot_build_s']:.2f} s"),
        ("resolve from snapshot", f"{r['lookups']} lookups",
         (f"mean {r['resolve_mean_us']:.2f} us, p99 {r['resolve_p99_us']:.2f} us "
          f"(bare dict {r['plain_dict_lookup_mean_us']:.2f} us)")),
        ("publish -> visible", f"{v['trials']} trials, poll {v['watcher_poll_ms']:.0f} ms",
         (f"p50 {v['visible_after_publish_start_ms_p50']:.1f} ms from publish start "
          f"(publish itself {v['publish_ms_p50']:.1f} ms)")),
        ("latest row, before gc", f"{pre['data_files']} files, v{pre['table_version']}",
         read(pre)),
        ("gc (compact+checkpoint)", f"{ix['gc']['files_compacted']} files compacted",
         f"{ix['gc_s']:.2f} s"),
        ("latest row, after gc", f"{post['data_files']} files, v{post['table_version']}",
         read(post)),
    ]
    w0, w1 = max(len(a) for a, _, _ in rows), max(len(b) for _, b, _ in rows)
    return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows)


def _environment(root: str) -> dict[str, Any]:
    from importlib.metadata import version

    return {"python": platform.python_version(), "cpus": mp.cpu_count(), "root": root,
            **{pkg: version(pkg) for pkg in ("deltalake", "pyarrow", "xgboost")}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (defaults: the issue's workload)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--versions", type=int, default=10000, help="versions in the bulk run")
    p.add_argument("--shards", type=int, default=16)
    p.add_argument("--trees", type=int, default=50, help="trees of the model (depth --depth)")
    p.add_argument("--depth", type=int, default=5)
    p.add_argument("--lookups", type=int, default=200000)
    p.add_argument("--visibility-trials", type=int, default=20)
    p.add_argument("--poll-ms", type=float, default=10.0, help="watcher refresh interval")
    p.add_argument("--small-publishes", type=int, default=200)
    p.add_argument("--repeats", type=int, default=15, help="latest-row reads per phase")
    p.add_argument("--root", default=None, help="registry root (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the temp registry")
    p.add_argument("--out", default="benchmarks/results/registry.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every phase, print a table and write the JSON results."""
    args = parse_args(argv)
    tmp = None if args.root else tempfile.mkdtemp(prefix="tenantry-regbench-")
    root = args.root or str(Path(tmp or ".") / "registry")
    try:
        data = model_bytes(args.trees, args.depth)
        reg = Registry.create(root, num_shards=args.shards)
        tenants = [f"t{i:05d}" for i in range(args.versions)]
        res: dict[str, Any] = {"bulk": bench_bulk(reg, tenants, data)}
        res["resolve"] = bench_resolve(reg, tenants, args.lookups)
        res["visibility"] = bench_visibility(reg, tenants, data, args.visibility_trials,
                                             args.poll_ms / 1e3)
        res["index"] = bench_index(reg, tenants, data, args.small_publishes, args.repeats)
    finally:
        if tmp and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    res["config"] = {k: v for k, v in vars(args).items() if k not in ("out", "keep")}
    res["environment"] = _environment("temp dir (local disk)" if tmp else root)
    print(_table(res))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
