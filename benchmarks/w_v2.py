"""W-v2: Open Inference Protocol infer vs /v1 predict on the same deployment, equal load.

    python benchmarks/w_v2.py [--tenants 500] [--rate 800] [--hold 8] [--rounds 4]

One ``tenantry serve`` (ingress + 2 model hosts) over generated and trained tenants;
``tenantry loadtest``'s open-loop generator sends single-row requests, Zipf(1.1) over the
tenants, at one fixed rate, alternating /v1 and /v2 phases (order swapped every round so
neither always runs warm). Reports p50/p99 per protocol (median of the rounds) and the
ratios v2/v1; the goal is both within 10%. Writes benchmarks/results/w_v2.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.loadtest import LoadTestConfig, run_loadtest
from engine.loadtest.tenants import registry_tenants
from engine.loadtest.workload import WireProtocol
from registry import Registry

BIN = Path(sys.executable).parent


def prepare_registry(workdir: Path, tenants: int) -> Registry:
    """Generated features and one nightly run over them (reused when already there)."""
    root = workdir / "registry"
    if root.exists():
        return Registry.open(str(root))
    data = workdir / "features"
    if not data.exists():
        subprocess.run([str(BIN / "tenantry"), "data", "generate", "--out", str(data),
                        "--tenants", str(tenants), "--days", "2", "--seed", "11"], check=True)
    subprocess.run([str(BIN / "tenantry"), "registry", "init", "--registry", str(root)],
                   check=True)
    subprocess.run([str(BIN / "tenantry"), "train", "--data", str(data), "--registry",
                    str(root), "--json"], check=True, stdout=subprocess.DEVNULL)
    return Registry.open(str(root))


def serve(registry: str, port: int) -> subprocess.Popen[bytes]:
    """``tenantry serve`` in its own process group, returned once both replicas are up."""
    proc = subprocess.Popen(
        [str(BIN / "tenantry"), "serve", "--registry", registry, "--port", str(port),
         "--replicas", "2", "--cache-mb", "64", "--app-name", "wv2"],
        env=dict(os.environ, RAY_USAGE_STATS_ENABLED="0"), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if json.loads(r.read()).get("replicas", 0) >= 2:
                    return proc
        except OSError:
            pass
        time.sleep(0.5)
    stop(proc)
    raise TimeoutError("tenantry serve did not become ready")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the serve process group (SIGKILL if it lingers)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def phase(base: dict[str, Any], protocol: WireProtocol, rate: float) -> dict[str, float]:
    """One fixed-rate stage with ``protocol``: its achieved rate and latency."""
    run = run_loadtest(LoadTestConfig(rates=(rate,), refine=False, stop_on_fail=False,
                                      protocol=protocol, **base))
    s = run.stages[0]
    return {"achieved_rps": s.achieved_rps, "p50_ms": s.p50_ms, "p99_ms": s.p99_ms,
            "error_rate": s.error_rate}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=500)
    parser.add_argument("--rate", type=float, default=800.0)
    parser.add_argument("--hold", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--port", type=int, default=18190)
    parser.add_argument("--workdir", default=str(ROOT / "benchmarks" / "results" / "w_v2"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "w_v2.json"))
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    reg = prepare_registry(workdir, args.tenants)
    tenants = registry_tenants(reg.root, None)
    proc = serve(reg.root, args.port)
    try:
        base = {"url": f"http://127.0.0.1:{args.port}", "tenants": tenants.ids,
                "widths": tenants.widths, "zipf_s": 1.1, "hold_s": args.hold}
        phase(base, WireProtocol.V1, args.rate / 2)  # warm the caches for both
        rounds = []
        for i in range(args.rounds):
            order = [WireProtocol.V1, WireProtocol.V2]
            if i % 2:
                order.reverse()
            got = {p.value: phase(base, p, args.rate) for p in order}
            rounds.append(got)
            print(json.dumps({"round": i, **got}), flush=True)
    finally:
        stop(proc)
    med = {p: {k: statistics.median(r[p][k] for r in rounds)
               for k in ("achieved_rps", "p50_ms", "p99_ms", "error_rate")}
           for p in ("v1", "v2")}
    result = {"tenants": len(tenants.ids), "rate": args.rate, "hold_s": args.hold,
              "rounds": rounds, "median": med,
              "p50_ratio": med["v2"]["p50_ms"] / med["v1"]["p50_ms"],
              "p99_ratio": med["v2"]["p99_ms"] / med["v1"]["p99_ms"]}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\n{'protocol':<9} {'rps':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for p in ("v1", "v2"):
        m = med[p]
        print(f"{p:<9} {m['achieved_rps']:>7.0f} {m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f} "
              f"{m['error_rate']:>7.4f}")
    print(f"v2/v1: p50 {result['p50_ratio']:.3f}  p99 {result['p99_ratio']:.3f} "
          f"(goal <= 1.10 each)\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
