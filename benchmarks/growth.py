"""W-growth: what 1k, 10k and 100k tenants cost the registry, the ingress and serving.

    python benchmarks/growth.py [--tenants 1000,10000,100000]
                                [--parts registry,resolve,gc,serve,train]
                                [--workdir /tmp/tenantry-growth] [--hold 3]

Per scale N (``registry`` part), in a registry of its own under ``--workdir``: one small
real XGBoost model published for N tenants (run 1), then a night's run that publishes a
new version of every tenant and moves every production alias (run 2). Reported: each run's
publish time (staging the artifacts, with ``--threads`` writers as the job's tasks do, and
the one index commit); the refresh of a snapshot loaded after run 1 that picks run 2 up;
the snapshot's cold load after run 2 in a fresh process (time, and bytes per tenant held
by tracemalloc, which sees numpy's buffers); one ``registry gc`` pass and the index's
files before and after it; the time to move a model host in or out of a running HAProxy's
slot (runtime API, as the ingress does). ``resolve``: over that registry, loaded fresh,
the lookup latency of ``resolve_version`` (what the request path calls) and of
``resolve`` (a whole ``ModelVersion``), Zipf(1.1) and uniform tenants. ``gc``: two more
``registry gc`` passes over it with nothing left to remove (what finding the versions costs).
``serve``: ``tenantry serve`` (2 replicas) over that registry through W-serve's machinery
(``benchmarks/w_serve.py``), its cache sized so Zipf(1.1) traffic hits ``--hit-rate`` at
every N, warmed by ``--warmup`` s of load; the highest rate with p99 <= 50 ms and the p99
at ``--fixed-rate``. It runs twice per N: first with every production artifact read into
the page cache beforehand (a long-running node's state; the scales then differ only in
tenantry's own costs), then with them evicted (a miss of a tenant the warm-up did not touch
reads the disk; ``--warm-only`` skips this). ``train``: the real training job over 10k
generated tenants (W-train's data, 8 days), end to end. Writes
``benchmarks/results/growth.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from growth_registry import gc_part, registry_part, resolve_part

from registry import Registry


def cache_models_for(n: int, hit_rate: float, replicas: int = 2) -> int:
    """Models per replica so that Zipf(1.1) over N tenants hits ``hit_rate`` (hash-split)."""
    p = np.arange(1, n + 1, dtype=np.float64) ** -1.1
    top = int(np.searchsorted(np.cumsum(p) / p.sum(), hit_rate)) + 1
    return max(1, -(-top // replicas))


def set_page_cache(reg: Registry, warm: bool) -> dict[str, Any]:
    """Read every production artifact once (warm) or evict it from the page cache (cold).

    A miss reads its artifact from disk unless the OS holds it: at 1k tenants the warm-up
    load has touched every one, at 100k most have never been read, so without this the
    scales differ in the disk's latency, not in tenantry's. ``cold`` uses
    ``posix_fadvise(DONTNEED)`` (clean pages only, no privileges needed).
    """
    snap = reg.snapshot()
    t0 = time.perf_counter()
    files = 0
    for tenant in snap.tenants():
        fd = os.open(snap.resolve(tenant).artifact_uri, os.O_RDONLY)
        try:
            if warm:
                while os.read(fd, 1 << 20):
                    pass
            else:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        files += 1
    return {"mode": "warm" if warm else "cold", "files": files,
            "seconds": time.perf_counter() - t0}


def serve_part(n: int, workdir: Path, args: argparse.Namespace,
               warm: bool = True) -> dict[str, Any]:
    """W-serve's tenantry measurement over the N-tenant registry, at equal hit rate."""
    import w_serve

    from engine.loadtest import LoadTestConfig, run_loadtest
    from engine.loadtest.tenants import registry_tenants
    from engine.serving.model import load_model

    root = str(workdir / f"registry-{n}")
    reg = Registry.open(root)
    tenant_set = registry_tenants(root, None)
    cache_models = cache_models_for(n, args.hit_rate)
    nbytes = load_model(reg, reg.snapshot().resolve(tenant_set.ids[0])).nbytes
    cache_mb = 1.05 * cache_models * nbytes / 2**20
    page_cache = set_page_cache(reg, warm)
    proc = w_serve.start("tenantry", root, cache_models, cache_mb,
                         (tenant_set.ids[-1], tenant_set.widths[-1]), workdir / "logs")
    ns = argparse.Namespace(hold=args.hold, seed=0, workers=1, quick=False,
                            fixed_rate=args.fixed_rate, fixed_hold=args.fixed_hold)
    try:  # warm the caches first: a short stage over 100k tenants is mostly cold misses
        run_loadtest(LoadTestConfig(url=f"http://127.0.0.1:{w_serve.PORTS['tenantry']}",
                                    tenants=tenant_set.ids, widths=tenant_set.widths,
                                    rates=(args.warmup_rate,), hold_s=args.warmup, refine=False,
                                    stop_on_fail=False))
        res = w_serve.measure("tenantry", tenant_set, ns, None)
    finally:
        w_serve.stop(proc, graceful=True)
    return {"cache_models_per_replica": cache_models, "cache_mb_per_replica": cache_mb,
            "max_rps_within_slo": res["max_rps_within_slo"], "hit_rate": res.get("hit_rate"),
            "fixed_rate": res["fixed_rate"], "stages": res["stages"], "page_cache": page_cache,
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


# growth.json key, where in a scale's registry/serve result, README label, format
SUMMARY = (("snapshot_load_s", "registry", ("cold_load", "load_s"), "snapshot cold load (s)", ".2f"),
           ("snapshot_bytes_per_tenant", "registry", ("cold_load", "bytes_per_tenant"),
            "snapshot bytes per tenant", ".0f"),
           ("refresh_s", "registry", ("refresh_s",), "refresh after a night (s)", ".2f"),
           ("refresh_100_s", "registry", ("refresh_100_s",), "refresh after 100 moves (s)", ".3f"),
           ("resolve_us", "resolve", ("zipf_p50_us",), "resolve_version p50 (us, Zipf)", ".2f"),
           ("resolve_mean_us", "resolve", ("zipf_mean_us",), "resolve_version mean (us, Zipf)",
            ".2f"),
           ("resolve_uniform_us", "resolve", ("uniform_p50_us",),
            "resolve_version p50 (us, uniform)", ".2f"),
           ("resolve_full_mean_us", "resolve", ("full_zipf_mean_us",),
            "resolve (a ModelVersion) mean (us, Zipf)", ".2f"),
           ("publish_s", "registry", ("run2", "publish_s"), "publish one night's run (s)", ".1f"),
           ("gc_s", "registry", ("gc_s",), "gc pass (s)", ".1f"),
           ("gc_idle_s", "gc", ("second_pass_s",), "gc pass, nothing to remove (s)", ".2f"),
           ("ingress_fill_ms", "registry", ("ingress", "fill_ms"), "ingress slot fill (ms)", ".2f"),
           ("serve_rps", "serve", ("max_rps_within_slo",), "W-serve max rps, p99<=50ms", ".0f"),
           ("serve_hit_rate", "serve", ("hit_rate",), "W-serve hit rate", ".3f"),
           ("serve_p99_ms", "serve", ("fixed_rate", "p99_ms"),
            "W-serve p99 at the fixed rate (ms), artifacts in the page cache", ".2f"),
           ("serve_cold_p99_ms", "serve_cold", ("fixed_rate", "p99_ms"),
            "the same, artifacts evicted from the page cache", ".2f"),
           ("serve_cold_rps", "serve_cold", ("max_rps_within_slo",),
            "W-serve max rps, artifacts evicted", ".0f"))


def summarise(scales: list[int], parts: dict[str, dict[int, Any]],
              train: dict[str, Any] | None) -> dict[str, Any]:
    """The growth.json document: lists aligned with ``tenants``, then the details."""
    out: dict[str, Any] = {"tenants": scales}
    for key, part, path, _, _ in SUMMARY:
        out[key] = []
        for n in scales:
            value: Any = parts[part].get(n)
            for step in path:
                value = None if value is None else value.get(step)
            out[key].append(value)
    out["train_10k_s"] = train["train_10k_s"] if train else None
    out.update({part: {str(n): v for n, v in res.items()} for part, res in parts.items()})
    return {**out, "train": train}


def markdown(results: dict[str, Any]) -> str:
    """The results as a markdown table (one column per scale)."""
    lines = ["| tenants | " + " | ".join(f"{n:,}" for n in results["tenants"]) + " |",
             "|---" * (len(results["tenants"]) + 1) + "|"]
    for key, _, _, label, spec in SUMMARY:
        cells = ["n/a" if v is None else format(v, spec) for v in results[key]]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if results.get("train_10k_s") is not None:
        lines.append(f"\nnightly training run, 10k tenants: {results['train_10k_s']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the parts asked for and write the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tenants", default="1000,10000,100000")
    ap.add_argument("--parts", default="registry,resolve,gc,serve,train")
    ap.add_argument("--workdir", default="/tmp/tenantry-growth")
    ap.add_argument("--threads", type=int, default=4, help="artifact writers while staging")
    ap.add_argument("--lookups", type=int, default=100_000)
    ap.add_argument("--hit-rate", type=float, default=0.8)
    ap.add_argument("--hold", type=float, default=3.0, help="seconds per load stage")
    ap.add_argument("--fixed-rate", type=float, default=500.0)
    ap.add_argument("--fixed-hold", type=float, default=20.0,
                    help="seconds at --fixed-rate (its p99 is the per-request figure: 3 s "
                         "held only 1,500 requests, whose p99 moved by 30%% between runs)")
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds of load before measuring")
    ap.add_argument("--warmup-rate", type=float, default=300.0)
    ap.add_argument("--warm-only", action="store_true",
                    help="serve: skip the second measurement with artifacts evicted")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "growth.json"))
    args = ap.parse_args(argv)
    try:
        scales = [int(s) for s in args.tenants.split(",") if s]
    except ValueError:
        ap.error(f"--tenants takes comma-separated counts, not {args.tenants!r}")
    parts = set(args.parts.split(","))
    known = {"registry", "resolve", "gc", "serve", "train"}
    if not parts <= known:
        ap.error(f"unknown parts {sorted(parts - known)}")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    reg, resolve, gc, serve, serve_cold = {}, {}, {}, {}, {}
    for n in scales:
        if "registry" in parts:
            print(f"== registry {n:,}", flush=True)
            reg[n] = registry_part(n, workdir, args)
            print(json.dumps(reg[n], default=str), flush=True)
        if "resolve" in parts:
            resolve[n] = resolve_part(n, workdir, args)
            print(f"== resolve {n:,}: {json.dumps(resolve[n])}", flush=True)
        if "gc" in parts:
            gc[n] = gc_part(n, workdir, args)
            print(f"== gc {n:,}: {json.dumps(gc[n])}", flush=True)
        if "serve" in parts:
            print(f"== serve {n:,}", flush=True)
            serve[n] = serve_part(n, workdir, args)
            print(json.dumps({k: v for k, v in serve[n].items() if k != "stages"}), flush=True)
            if not args.warm_only:
                print(f"== serve {n:,}, artifacts evicted from the page cache", flush=True)
                serve_cold[n] = serve_part(n, workdir, args, warm=False)
                print(json.dumps({k: v for k, v in serve_cold[n].items() if k != "stages"}),
                      flush=True)
    train = train_part(workdir) if "train" in parts else None
    results = summarise(scales, {"registry": reg, "resolve": resolve, "gc": gc, "serve": serve,
                                 "serve_cold": serve_cold}, train)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
