"""W-shadow: production p99 with and without shadow mode at 50% of capacity.

    python benchmarks/w_shadow.py [--tenants 2000] [--rate R] [--hold 8] [--rounds 8]
                                  [--shadow-worker actor|thread] [--synthetic]

W-serve's setup (Zipf(1.1) single-row requests over loopback HTTP, 2 model-host replicas,
a cache that fits ~25% of the tenants per replica, open-loop arrivals from the
``engine.loadtest`` library). Every tenant gets a second version under its ``shadow``
alias (a different model), then the script finds the capacity (highest rate with
p99 <= 50 ms; skipped with ``--rate``), and at half of it runs ``--rounds`` rounds of one
phase with shadow off and one with shadow on, the order alternating from round to round
(an A/A run, ``--aa``, where both phases have shadow off, showed the second phase of a
round slower by ~8%). Shadow on mirrors 100% of the hottest tenant and 10% of every other
tenant. Prints the median p99 over the phases of each kind and their ratio (target
<= 1.1), plus the median of the rounds' own on/off ratios, and writes JSON to
``benchmarks/results/`` (every phase: p50/p99, statuses, generator lag, mirror outcomes,
and what the dispatch steps cost one replica's event loop).

Requests are sent unmarked (without ``x-tenantry-synthetic: 1``), so every mirrored
request is predicted by the shadow *and* written to the pair log, as real traffic would be;
``--synthetic`` marks them (predicted, never logged). ``--shadow-worker thread`` runs the
shadow inside the replica process instead of its own Ray actor, for comparison.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.loadtest import LoadTestConfig, StageResult, ZipfSampler, run_loadtest
from engine.loadtest.capacity import max_within_slo
from engine.serving.launch import start_serving
from engine.serving.model import load_model
from engine.settings import ServeSettings
from engine.shadow import ConfigStore, ShadowTables, build_config
from registry import AliasMove, NewVersion, Registry
from training.features import FEATURE_NAMES
from training.model import ModelSpec, train_tenant

DISTINCT_MODELS = 64  # models trained; tenants reuse their bytes (each has its own artifact)


def _train(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=len(FEATURE_NAMES))
    x = rng.normal(size=(1200, len(FEATURE_NAMES)))
    y = (x @ w + rng.normal(size=len(x)) > 0).astype(np.int64)
    return train_tenant(f"bench-{seed}", FEATURE_NAMES, x[:1000], y[:1000], x[1000:],
                        y[1000:], ModelSpec()).model_bytes


def build_registry(root: str, tenants: list[str]) -> Registry:
    """Every tenant at v1 (production) and v2 (shadow alias, a different model)."""
    with mp.get_context("fork").Pool() as pool:
        models = pool.map(_train, range(DISTINCT_MODELS))
    reg = Registry.create(root, num_shards=16)
    for run, alias, shift in (("w-shadow-prod", "production", 0), ("w-shadow-new", "shadow", 1)):
        staged = [reg.stage_artifact(t, models[(i + shift) % DISTINCT_MODELS], run)
                  for i, t in enumerate(tenants)]
        reg.publish(run, [NewVersion(s, FEATURE_NAMES, {"auc": 0.9}) for s in staged],
                    [AliasMove(s.tenant_id, alias, s.version) for s in staged])
    return reg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _shadow_counts(url: str) -> dict[str, float]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    return {s.labels["outcome"]: s.value for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name == "tenantry_shadow_requests_total"}


def _replica_shadow(url: str, tenant: str) -> dict[str, Any]:
    """One replica's shadow counters: transport and what dispatch steps cost its loop."""
    import urllib.request

    doc = json.loads(urllib.request.urlopen(f"{url}/v1/tenants/{tenant}/shadow",
                                            timeout=10).read())
    replica = doc["replica"]
    return {"transport": replica["worker"].get("transport"), "dispatch": replica["dispatch"]}


def _pairs_logged(reg: Registry) -> int:
    from engine.shadow.tables import PAIRS

    try:
        return int(ShadowTables.for_registry(reg).query(PAIRS).num_rows)
    except Exception:  # noqa: BLE001 - no pair written yet: the table may not exist
        return 0


def _stage(url: str, tenants: list[str], rate: float, hold: float, seed: int,
           synthetic: bool) -> StageResult:
    cfg = LoadTestConfig(url, tuple(tenants), (len(FEATURE_NAMES),) * len(tenants),
                         rates=(rate,), hold_s=hold, refine=False, stop_on_fail=False,
                         workers=1, seed=seed, synthetic=synthetic)
    return run_loadtest(cfg).stages[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tenants", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=None, help="skip the capacity search")
    ap.add_argument("--capacity-rates", default="1000,1500,2000,2500,3000,3500,4000")
    ap.add_argument("--hold", type=float, default=8.0, help="seconds per measured phase")
    ap.add_argument("--rounds", type=int, default=8, help="off/on pairs")
    ap.add_argument("--shadow-worker", choices=("actor", "thread"), default="actor",
                    help="where shadow predictions run (default: a Ray actor per replica)")
    ap.add_argument("--synthetic", action="store_true",
                    help="mark requests synthetic (shadowed but never logged as pairs)")
    ap.add_argument("--aa", action="store_true",
                    help="A/A calibration: 'on' phases keep shadow off too, so the ratio "
                         "shows this box's noise floor")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="w-shadow-"))
    tenants = [f"t{i:05d}" for i in range(args.tenants)]
    started = time.time()
    reg = build_registry(str(workdir / "registry"), tenants)
    production = reg.production_versions()
    sample = sorted(production)[:: max(1, len(production) // 200)]
    per_model = float(np.mean([load_model(reg, production[t]).nbytes for t in sample]))
    cache_mb = args.tenants * 0.25 * per_model / 2**20  # measured footprint, as W-serve
    print(f"registry of {args.tenants} tenants x 2 versions in {time.time() - started:.0f}s; "
          f"cache {cache_mb:.1f} MB per replica", flush=True)
    settings = ServeSettings.from_env(registry=reg.root, port=_free_port(), replicas=2,
                                      cache_mb=cache_mb, shadow_worker=args.shadow_worker)
    handle = start_serving(settings, app_name="w-shadow")
    store = ConfigStore(ShadowTables.for_registry(reg))
    hot = tenants[int(ZipfSampler(len(tenants), 1.1, seed=0).rank_to_index[0])]
    try:
        rate = args.rate
        capacity = None
        if rate is None:
            _stage(handle.url, tenants, 50.0, 10.0, 0, args.synthetic)  # warm caches first
            rates = tuple(float(r) for r in args.capacity_rates.split(","))
            run = run_loadtest(LoadTestConfig(handle.url, tuple(tenants),
                                              (len(FEATURE_NAMES),) * len(tenants),
                                              rates=rates, hold_s=10.0,
                                              synthetic=args.synthetic))
            for st in run.stages:
                print(f"  capacity stage {st.offered_rps:.0f} req/s: achieved "
                      f"{st.achieved_rps:.0f}, p99 {st.p99_ms:.1f} ms, errors "
                      f"{st.error_rate:.2%} {st.status_counts}", flush=True)
            capacity = max_within_slo(run.stages)
            if capacity is None:
                print("no stage met the SLO; pass --rate", file=sys.stderr)
                return 1
            rate = round(capacity * 0.5)
        print(f"capacity {capacity} req/s -> measuring at {rate} req/s; hot tenant {hot}",
              flush=True)
        # Same seed everywhere: same hot tenant, same request sequence in every phase.
        _stage(handle.url, tenants, rate, max(5.0, args.hold / 2), 0, args.synthetic)  # warm
        phases: list[dict[str, Any]] = []
        for r in range(args.rounds):
            # Off first in even rounds, on first in odd ones: whatever favours the first
            # (or second) phase of a round hits both alike (an A/A run showed such a bias).
            for shadow in ((False, True) if r % 2 == 0 else (True, False)):
                if shadow and not args.aa:
                    store.set_many([build_config(t, 1.0 if t == hot else 0.1)
                                    for t in tenants])
                else:
                    store.clear_many(tenants)
                time.sleep(3.0)  # replicas re-read the config table every ~1 s
                before = _shadow_counts(handle.url)
                res = _stage(handle.url, tenants, rate, args.hold, 0, args.synthetic)
                after = _shadow_counts(handle.url)
                mirrored = {k: after.get(k, 0) - before.get(k, 0) for k in after}
                replica = _replica_shadow(handle.url, hot)  # after every phase: same steps
                phases.append({"shadow": shadow, "round": r, "p50_ms": res.p50_ms,
                               "p99_ms": res.p99_ms, "achieved_rps": res.achieved_rps,
                               "error_rate": res.error_rate, "hit_rate": res.hit_rate,
                               "generator_behind_max_ms": res.behind_schedule_max_ms,
                               "status_counts": res.status_counts,
                               "shadow_outcomes": mirrored, "replica": replica})
                print(f"  round {r} shadow {'on ' if shadow else 'off'}: p50 "
                      f"{res.p50_ms:.2f} ms p99 {res.p99_ms:.2f} ms at {res.achieved_rps:.0f} "
                      f"req/s, errors {res.error_rate:.3%}, generator behind by up to "
                      f"{res.behind_schedule_max_ms:.0f} ms, shadow {mirrored} {replica}",
                      flush=True)
        store.clear_many(tenants)
    finally:
        handle.shutdown()
    off = float(np.median([p["p99_ms"] for p in phases if not p["shadow"]]))
    on = float(np.median([p["p99_ms"] for p in phases if p["shadow"]]))
    # Each round's on/off ratio (neighbouring phases share the box's state), then the median.
    by_round = {(p["round"], p["shadow"]): p["p99_ms"] for p in phases}
    paired = float(np.median([by_round[(r, True)] / by_round[(r, False)]
                              for r in range(args.rounds)]))
    pairs = _pairs_logged(reg)
    doc = {"workload": "W-shadow", "tenants": args.tenants, "capacity_rps": capacity,
           "shadow_worker": args.shadow_worker, "synthetic": args.synthetic, "aa": args.aa,
           "pairs_logged": pairs,
           "rate_rps": rate, "hot_tenant": hot, "hold_s": args.hold, "phases": phases,
           "p99_ms_without_shadow": off, "p99_ms_with_shadow": on, "ratio": on / off,
           "median_round_ratio": paired,
           "target_ratio": 1.1}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = ("w_shadow" + ("_thread" if args.shadow_worker == "thread" else "")
            + ("_synthetic" if args.synthetic else "") + ("_aa" if args.aa else "") + ".json")
    (out / name).write_text(json.dumps(doc, indent=2))
    print(f"W-shadow: production p99 {off:.2f} ms without shadow, {on:.2f} ms with shadow "
          f"-> ratio {on / off:.3f} (target <= 1.1; median of the rounds' ratios {paired:.3f}); "
          f"{pairs} pairs logged; {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
