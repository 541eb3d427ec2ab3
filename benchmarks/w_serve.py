"""W-serve: tenantry vs B1 (stock Serve @serve.multiplexed) vs B2 (plain uvicorn), one run.

    python benchmarks/w_serve.py [--tenants 2000] [--hold 10] [--systems tenantry,b1,b2]

2,000 trained tenants (generator + ``tenantry train``), Zipf(1.1) popularity, single-row
requests over loopback HTTP, open-loop arrivals (``engine.loadtest``), 2 model-host
replicas each with a cache that fits ~25% of the tenants. Each server runs in its own
process, one after the other, on this box. For each system: the highest rate held with
p99 <= 50 ms and < 0.1% errors, hit rate, and p50/p99 at a fixed rate. For tenantry also:
the hit rate of one LRU with the same total capacity on the same request trace, and the
latency a cache miss adds over a hit (p50, sequential requests). Writes JSON to
benchmarks/results/w_serve.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.loadtest import LoadTestConfig, run_loadtest, simulate_lru  # noqa: E402
from engine.loadtest.metrics_probe import scrape  # noqa: E402
from engine.loadtest.tenants import registry_tenants  # noqa: E402
from engine.serving.model import load_model  # noqa: E402
from registry import Registry  # noqa: E402

BIN = Path(sys.executable).parent
RATES = {"tenantry": (500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 5000, 6000),
         "b1": (20, 40, 60, 80, 100, 150, 200),
         "b2": (300, 600, 800, 1000, 1200, 1500, 1800, 2200, 2600, 3000)}
PORTS = {"tenantry": 18180, "b1": 18181, "b2": 18182}


def prepare_registry(workdir: Path, tenants: int) -> Registry:
    """A registry with ``tenants`` trained tenants (reused when it already exists)."""
    root = workdir / "registry"
    if root.exists():
        reg = Registry.open(str(root))
        if len(reg.production_versions()) >= 0.9 * tenants:
            return reg
    from training import GeneratorConfig, generate, run_training
    from training.settings import TrainingSettings

    data = workdir / "features"
    if not data.exists():
        generate(str(data), GeneratorConfig(tenants=tenants, days=2, seed=7))
    from dataclasses import replace

    run_training(str(data), str(root), settings=replace(TrainingSettings.from_env(),
                                                        progress=False))
    return Registry.open(str(root))


def wait_ok(port: int, method: str, path: str, body: str | None = None,
            headers: dict[str, str] | None = None, timeout_s: float = 180.0) -> None:
    """Poll until ``method path`` on 127.0.0.1:``port`` answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request(method, path, body, headers or {})
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"server on port {port} did not answer {method} {path}")


def wait_predict(port: int, tenant: str, width: int, timeout_s: float = 180.0) -> None:
    """Poll until a predict for ``tenant`` answers 200 (B1 has no readiness route)."""
    wait_ok(port, "POST", f"/v1/tenants/{tenant}/predict",
            json.dumps({"instances": [[0.5] * width]}),
            {"content-type": "application/json", "serve_multiplexed_model_id": tenant},
            timeout_s)


def start(system: str, registry: str, cache_models: int, cache_mb: float,
          probe_tenant: tuple[str, int]) -> subprocess.Popen:
    """Start one system's server as a subprocess (stopped again if it never comes up)."""
    port = PORTS[system]
    if system == "tenantry":
        cmd = [str(BIN / "tenantry"), "serve", "--registry", registry, "--port", str(port),
               "--replicas", "2", "--cache-mb", f"{cache_mb:.2f}", "--app-name", "wserve"]
        probe = "/readyz"
    else:
        script = "b1_serve_multiplexed.py" if system == "b1" else "b2_uvicorn_app.py"
        cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--registry", registry,
               "--port", str(port), "--cache-models", str(cache_models)]
        probe = ""
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        if probe:
            wait_ok(port, "GET", probe)
        wait_predict(port, *probe_tenant)
        if system == "tenantry":
            deadline = time.monotonic() + 60
            while json.loads(_get(port, "/readyz")).get("replicas", 0) < 2:
                if time.monotonic() > deadline:
                    raise TimeoutError("tenantry replicas did not register")
                time.sleep(0.5)
    except BaseException:
        stop(proc)
        raise
    return proc


def _get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    return conn.getresponse().read()


def stop(proc: subprocess.Popen) -> None:
    """Stop a server and everything it started."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(3)


def miss_vs_hit(port: int, tenants: list[str], width: int, multiplexed: bool) -> dict[str, float]:
    """p50 latency of a tenant's first request (miss) and second (hit), sequentially."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = json.dumps({"instances": [[0.5] * width]})
    firsts, seconds = [], []
    for tenant in tenants:
        headers = {"content-type": "application/json", "x-tenantry-synthetic": "1"}
        if multiplexed:
            headers["serve_multiplexed_model_id"] = tenant
        for sink in (firsts, seconds):
            t0 = time.perf_counter()
            conn.request("POST", f"/v1/tenants/{tenant}/predict", body, headers)
            resp = conn.getresponse()
            resp.read()
            sink.append((time.perf_counter() - t0) * 1e3)
            assert resp.status == 200, resp.status
    miss, hit = float(np.median(firsts)), float(np.median(seconds))
    return {"miss_p50_ms": miss, "hit_p50_ms": hit, "miss_penalty_p50_ms": miss - hit}


def measure(system: str, reg: Registry, args: argparse.Namespace, cache_models: int,
            cache_mb: float) -> dict[str, Any]:
    """Everything W-serve reports for one system."""
    tenant_set = registry_tenants(reg.root, None)
    port = PORTS[system]
    url = f"http://127.0.0.1:{port}"
    proc = start(system, reg.root, cache_models, cache_mb,
                 (tenant_set.ids[-1], tenant_set.widths[-1]))
    try:
        out: dict[str, Any] = {"system": system}
        if system != "b1":  # before any traffic: the first 100 tenants are all cold
            out.update(miss_vs_hit(port, list(tenant_set.ids[:100]), tenant_set.widths[0],
                                   False))
        base = dict(url=url, tenants=tenant_set.ids, widths=tenant_set.widths, zipf_s=1.1,
                    hold_s=args.hold, slo_p99_ms=50.0, workers=args.workers,
                    multiplexed_header=(system == "b1"), seed=args.seed)
        before = scrape(f"{url}/metrics")
        run = run_loadtest(LoadTestConfig(rates=tuple(float(r) for r in RATES[system]), **base))
        after = scrape(f"{url}/metrics")
        passing = [s for s in run.stages if s.p99_ms <= 50.0 and s.error_rate < 0.001]
        out["max_rps_within_slo"] = max((s.achieved_rps for s in passing), default=0.0)
        out["stages"] = [{k: getattr(s, k) for k in ("offered_rps", "achieved_rps", "p50_ms",
                                                      "p99_ms", "error_rate", "hit_rate",
                                                      "generator_behind")} for s in run.stages]
        out["notes"] = run.notes
        if before is not None and after is not None and before.hits is not None \
                and after.hits is not None:
            hits = after.hits - before.hits
            lookups = hits + (after.misses or 0) - (before.misses or 0)
            out["hit_rate"] = hits / lookups if lookups else None
            held = int(after.cache_models or 0)
            out["models_held"] = held
            single = simulate_lru(run.trace.tolist(), held) / max(1, len(run.trace))
            out["single_lru_same_capacity_hit_rate"] = single
            out["hit_rate_vs_single_lru"] = out["hit_rate"] / single if single else None
        fixed = run_loadtest(LoadTestConfig(rates=(float(args.fixed_rate),), refine=False,
                                            stop_on_fail=False, **base))
        s = fixed.stages[0]
        out["fixed_rate"] = {"offered_rps": s.offered_rps, "achieved_rps": s.achieved_rps,
                             "p50_ms": s.p50_ms, "p99_ms": s.p99_ms, "hit_rate": s.hit_rate,
                             "error_rate": s.error_rate}
        return out
    finally:
        stop(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=2000)
    parser.add_argument("--hold", type=float, default=10.0)
    parser.add_argument("--fixed-rate", type=float, default=50.0)
    parser.add_argument("--systems", default="tenantry,b1,b2")
    parser.add_argument("--workers", type=int, default=1, help="load generator processes")
    parser.add_argument("--workdir", default=str(ROOT / "benchmarks" / "results" / "w_serve"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "w_serve.json"))
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    reg = prepare_registry(workdir, args.tenants)
    production = reg.production_versions()
    cache_models = max(1, round(0.25 * len(production)))
    # tenantry's budget is bytes: size it from the measured footprint of loaded models
    # (a sample), so it too holds ~25% of the tenants per replica.
    sample = sorted(production)[:: max(1, len(production) // 200)]
    cache_mb = cache_models * float(np.mean([load_model(reg, production[t]).nbytes
                                             for t in sample])) / 2**20
    results = {"tenants": len(production), "cache_models_per_replica": cache_models,
               "cache_mb_per_replica": cache_mb, "systems": {}}
    for system in args.systems.split(","):
        print(f"== {system}", flush=True)
        results["systems"][system] = measure(system, reg, args, cache_models, cache_mb)
        print(json.dumps(results["systems"][system], indent=1, default=str), flush=True)
    sysres = results["systems"]
    if {"tenantry", "b1", "b2"} <= set(sysres):
        ours = sysres["tenantry"]["max_rps_within_slo"]
        results["ratio_vs_b1"] = ours / max(sysres["b1"]["max_rps_within_slo"], 1e-9)
        results["ratio_vs_b2"] = ours / max(sysres["b2"]["max_rps_within_slo"], 1e-9)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    print(f"\n{'system':<10} {'max rps @p99<=50ms':>20} {'hit rate':>9} "
          f"{'p50@fixed':>10} {'p99@fixed':>10}")
    for name, r in sysres.items():
        hr = r.get("hit_rate")
        print(f"{name:<10} {r['max_rps_within_slo']:>20.0f} "
              f"{(f'{hr:.3f}' if hr is not None else 'n/a'):>9} "
              f"{r['fixed_rate']['p50_ms']:>10.1f} {r['fixed_rate']['p99_ms']:>10.1f}")
    for key in ("ratio_vs_b1", "ratio_vs_b2"):
        if key in results:
            print(f"{key}: {results[key]:.2f}x")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
