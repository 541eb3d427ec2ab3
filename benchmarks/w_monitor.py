"""W-monitor: what the sampled prediction log costs production p99.

    python benchmarks/w_monitor.py [--tenants 500] [--rate 300] [--hold 8] [--rounds 6]
                                   [--log-sample 0.01]

One ``tenantry serve --log-sample 0.01`` (2 model-host replicas, its own private Ray, a cache
that holds every tenant, the same trained models as W-shadow) driven by the
``engine.loadtest`` library at a fixed open-loop rate of Zipf(1.1) single-row requests.
Each round runs one phase with the log off and one with it on, the order alternating from
round to round; the toggle is per request, so one server serves both: requests marked
``x-tenantry-synthetic: 1`` are never logged (the hook returns at its first check), unmarked
ones are (each tenant's first 5 of the hour, then 1%), as real traffic would be. The log
is the only thing that tells them apart: no tenant is shadowed. Prints the median p99 of
each kind, their ratio and the median of the rounds' own on/off ratios (target <= 1.1),
the rows the hosts logged (``tenantry_prediction_log_rows_total``) and the rows in
``<registry>/predictions`` after the server stopped (its last flush included); JSON goes
to ``benchmarks/results/w_monitor.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.loadtest import LoadTestConfig, StageResult, run_loadtest
from engine.monitor.tables import PREDICTIONS, DeltaAppender
from registry import AliasMove, NewVersion, Registry
from training.features import FEATURE_NAMES
from training.model import ModelSpec, train_tenant

DISTINCT_MODELS = 16  # models trained; tenants reuse their bytes (each has its own artifact)


def build_registry(root: str, tenants: list[str]) -> Registry:
    """Every tenant at v1 (production), one of DISTINCT_MODELS small real models."""
    models = []
    for seed in range(DISTINCT_MODELS):
        rng = np.random.default_rng(seed)
        w = rng.normal(size=len(FEATURE_NAMES))
        x = rng.normal(size=(1200, len(FEATURE_NAMES)))
        y = (x @ w + rng.normal(size=len(x)) > 0).astype(np.int64)
        models.append(train_tenant(f"bench-{seed}", FEATURE_NAMES, x[:1000], y[:1000],
                                   x[1000:], y[1000:], ModelSpec()))
    reg = Registry.create(root, num_shards=16)
    staged = [reg.stage_artifact(t, models[i % DISTINCT_MODELS].model_bytes, "w-monitor")
              for i, t in enumerate(tenants)]
    reg.publish("w-monitor", [NewVersion(s, FEATURE_NAMES, {"auc": 0.9},
                                         profile=models[i % DISTINCT_MODELS].profile)
                              for i, s in enumerate(staged)],
                [AliasMove(s.tenant_id, "production", s.version) for s in staged])
    return reg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _logged(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    return {s.labels["outcome"]: s.value for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name == "tenantry_prediction_log_rows_total"}


def _start(reg: Registry, port: int, sample: float) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "engine.cli", "serve", "--registry", reg.root, "--port",
           str(port), "--replicas", "2", "--cache-mb", "256", "--log-sample", str(sample),
           "--json"]
    proc = subprocess.Popen(cmd, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            env={**os.environ, "TENANTRY_LOG_FLUSH_S": "5"},
                            start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the start line: one JSON document once serving
    if not line:
        raise SystemExit(f"tenantry serve exited with {proc.wait()}")
    url = json.loads(line)["url"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/readyz", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.5)
    return proc, url


def _stage(url: str, tenants: list[str], rate: float, hold: float, logged: bool) -> StageResult:
    cfg = LoadTestConfig(url, tuple(tenants), (len(FEATURE_NAMES),) * len(tenants),
                         rates=(rate,), hold_s=hold, refine=False, stop_on_fail=False,
                         workers=1, seed=0, synthetic=not logged)
    return run_loadtest(cfg).stages[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tenants", type=int, default=500)
    ap.add_argument("--rate", type=float, default=300.0, help="requests/s, open loop")
    ap.add_argument("--hold", type=float, default=8.0, help="seconds per measured phase")
    ap.add_argument("--rounds", type=int, default=6, help="off/on pairs")
    ap.add_argument("--log-sample", type=float, default=0.01)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="w-monitor-"))
    tenants = [f"t{i:05d}" for i in range(args.tenants)]
    started = time.time()
    reg = build_registry(str(workdir / "registry"), tenants)
    print(f"registry of {args.tenants} tenants in {time.time() - started:.0f}s", flush=True)
    proc, url = _start(reg, _free_port(), args.log_sample)
    phases: list[dict[str, Any]] = []
    try:
        _stage(url, tenants, args.rate, max(5.0, args.hold), logged=False)  # warm caches
        for r in range(args.rounds):
            for on in ((False, True) if r % 2 == 0 else (True, False)):
                before = _logged(url)
                res = _stage(url, tenants, args.rate, args.hold, logged=on)
                after = _logged(url)
                rows = {k: after.get(k, 0) - before.get(k, 0) for k in after}
                phases.append({"log": on, "round": r, "p50_ms": res.p50_ms, "p99_ms": res.p99_ms,
                               "achieved_rps": res.achieved_rps, "error_rate": res.error_rate,
                               "generator_behind_max_ms": res.behind_schedule_max_ms,
                               "log_rows_flushed_meanwhile": rows})
                print(f"  round {r} log {'on ' if on else 'off'}: p50 {res.p50_ms:.2f} ms p99 "
                      f"{res.p99_ms:.2f} ms at {res.achieved_rps:.0f} req/s, errors "
                      f"{res.error_rate:.3%}, generator behind by up to "
                      f"{res.behind_schedule_max_ms:.0f} ms, log rows written {rows}",
                      flush=True)
        counters = _logged(url)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # a clean stop: the hosts flush their logs
        proc.wait(120)
    stored = DeltaAppender.for_registry(reg, PREDICTIONS).sql(
        "SELECT COUNT(*) AS n FROM t").column("n")[0].as_py()
    off = float(np.median([p["p99_ms"] for p in phases if not p["log"]]))
    on = float(np.median([p["p99_ms"] for p in phases if p["log"]]))
    by_round = {(p["round"], p["log"]): p["p99_ms"] for p in phases}
    paired = float(np.median([by_round[(r, True)] / by_round[(r, False)]
                              for r in range(args.rounds)]))
    sent_on = sum(p["achieved_rps"] * args.hold for p in phases if p["log"])
    doc = {"workload": "W-monitor", "tenants": args.tenants, "rate_rps": args.rate,
           "hold_s": args.hold, "rounds": args.rounds, "log_sample": args.log_sample,
           "phases": phases, "p99_ms_log_off": off, "p99_ms_log_on": on, "ratio": on / off,
           "median_round_ratio": paired, "target_ratio": 1.1,
           "logged_requests_expected_at_most": round(sent_on * args.log_sample
                                                     + 5 * args.tenants * 2),
           "log_counters": counters, "rows_in_predictions_table": stored}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "w_monitor.json").write_text(json.dumps(doc, indent=2))
    print(f"W-monitor: production p99 {off:.2f} ms with the log off, {on:.2f} ms with it on "
          f"-> ratio {on / off:.3f} (target <= 1.1; median of the rounds' ratios "
          f"{paired:.3f}); {stored} rows in {reg.root}/predictions; {out / 'w_monitor.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
