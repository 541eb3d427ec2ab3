"""W-shadow: production p99 with and without shadow mode at 50% of capacity.

    python benchmarks/w_shadow.py [--tenants 2000] [--rate R] [--hold 15] [--rounds 6]
                                  [--aa-rounds 4] [--shadow-worker actor|thread] [--synthetic]

W-serve's setup (Zipf(1.1) single-row requests over loopback HTTP, 2 model-host replicas,
a cache that fits ~25% of the tenants per replica, open-loop arrivals from the
``engine.loadtest`` library). Every tenant gets a second version under its ``shadow``
alias (a different model), then the script finds the capacity (highest rate with
p99 <= 50 ms; skipped with ``--rate``), and at half of it runs ``--rounds`` rounds of one
phase with shadow off and one with shadow on, the order alternating from round to round,
then ``--aa-rounds`` A/A rounds in the same invocation (both phases with shadow off: this
box's noise, printed as a band beside the A/B ratios; ``--aa`` makes every round A/A).
Shadow on mirrors 100% of the hottest tenant and 10% of every other tenant. Prints the
median p99 over the phases of each kind and their ratio (target <= 1.1), the median of
the rounds' own on/off ratios, and per phase the p99 of the event-loop lag of the hot
tenant's replica (``tenantry_event_loop_lag_seconds``, from that replica's own
histogram: the upper bound of the bucket holding the 99th percentile), and writes JSON to
``benchmarks/results/`` (every phase: p50/p99, statuses, generator lag, mirror outcomes,
loop lag).

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

from shadow_readings import cpu_between, lag_p99_ms, replica_reading, shadow_counts

from engine.loadtest import LoadTestConfig, StageResult, ZipfSampler, run_loadtest
from engine.loadtest.capacity import max_within_slo
from engine.serving.launch import start_serving
from engine.serving.model import load_model, publish_check
from engine.settings import ServeSettings
from engine.shadow import ConfigStore, ShadowTables, build_config
from registry import AliasMove, NewVersion, Registry
from training.features import FEATURE_NAMES
from training.model import ModelSpec, TrainedModel, train_tenant

DISTINCT_MODELS = 64  # models trained; tenants reuse their bytes (each has its own artifact)


def _train(seed: int) -> TrainedModel:
    """A model, checked as the training job checks it (its compiled forest is saved)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=len(FEATURE_NAMES))
    x = rng.normal(size=(1200, len(FEATURE_NAMES)))
    y = (x @ w + rng.normal(size=len(x)) > 0).astype(np.int64)
    return train_tenant(f"bench-{seed}", FEATURE_NAMES, x[:1000], y[:1000], x[1000:],
                        y[1000:], ModelSpec(), checks=(publish_check,))


def build_registry(root: str, tenants: list[str]) -> Registry:
    """Every tenant at v1 (production) and v2 (shadow alias, a different model), published
    as the nightly training job publishes them (forest checked, compiled form saved)."""
    with mp.get_context("fork").Pool() as pool:
        models = pool.map(_train, range(DISTINCT_MODELS))
    reg = Registry.create(root, num_shards=16)
    for run, alias, shift in (("w-shadow-prod", "production", 0), ("w-shadow-new", "shadow", 1)):
        picked = [models[(i + shift) % DISTINCT_MODELS] for i in range(len(tenants))]
        staged = [reg.stage_artifact(t, m.model_bytes, run, m.files)
                  for t, m in zip(tenants, picked, strict=True)]
        reg.publish(run, [NewVersion(s, FEATURE_NAMES, {"auc": 0.9},
                                     forest_check=m.checks.get("forest_check"))
                          for s, m in zip(staged, picked, strict=True)],
                    [AliasMove(s.tenant_id, alias, s.version) for s in staged])
    return reg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def _capacity(url: str, tenants: list[str], rates: str, synthetic: bool) -> float | None:
    """Highest rate with p99 <= 50 ms (W-serve's search, caches warmed first)."""
    _stage(url, tenants, 50.0, 10.0, 0, synthetic)
    run = run_loadtest(LoadTestConfig(url, tuple(tenants), (len(FEATURE_NAMES),) * len(tenants),
                                      rates=tuple(float(r) for r in rates.split(",")),
                                      hold_s=10.0, synthetic=synthetic))
    for st in run.stages:
        print(f"  capacity stage {st.offered_rps:.0f} req/s: achieved {st.achieved_rps:.0f}, "
              f"p99 {st.p99_ms:.1f} ms, errors {st.error_rate:.2%} {st.status_counts}",
              flush=True)
    return max_within_slo(run.stages)


def _phase(url: str, store: ConfigStore, tenants: list[str], hot: str, rate: float,
           args: argparse.Namespace, r: int, shadow: bool, aa: bool) -> dict[str, Any]:
    """One measured phase (shadow on unless ``aa``: then both phases of its round are off)."""
    if shadow and not aa:
        store.set_many([build_config(t, 1.0 if t == hot else 0.1) for t in tenants])
    else:
        store.clear_many(tenants)
    time.sleep(3.0)  # replicas re-read the config table every ~1 s
    before, lag0 = shadow_counts(url), replica_reading(url, hot)
    res = _stage(url, tenants, rate, args.hold, 0, args.synthetic)
    after, lag1 = shadow_counts(url), replica_reading(url, hot)
    mirrored = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    same = lag0["pid"] == lag1["pid"]  # the hot tenant's replica did not change meanwhile
    lag = lag_p99_ms(lag0["loop_lag"], lag1["loop_lag"]) if same else float("nan")
    cpu, by_process = cpu_between(lag0, lag1)
    phase = {"shadow": shadow, "aa": aa, "round": r, "p50_ms": res.p50_ms,
             "p99_ms": res.p99_ms, "achieved_rps": res.achieved_rps,
             "error_rate": res.error_rate, "hit_rate": res.hit_rate,
             "generator_behind_max_ms": res.behind_schedule_max_ms,
             "status_counts": res.status_counts, "shadow_outcomes": mirrored,
             "loop_lag_p99_ms": lag, "spool": lag1["spool"], "replica_niceness": lag1["niceness"],
             "cpu_s": cpu, "cpu_s_by_process": by_process}
    print(f"  {'A/A ' if aa else ''}round {r} shadow {'on ' if shadow else 'off'}: p50 "
          f"{res.p50_ms:.2f} ms p99 {res.p99_ms:.2f} ms at {res.achieved_rps:.0f} req/s, "
          f"errors {res.error_rate:.3%}, generator behind by up to "
          f"{res.behind_schedule_max_ms:.0f} ms, hot replica loop lag p99 <= {lag:.2f} ms, "
          f"shadow {mirrored}; CPU s: hot replica {cpu['replica']:.2f}, its shadow "
          f"worker {cpu['worker']:.2f}, box {cpu['box']:.2f}", flush=True)
    return phase


def _rounds(url: str, store: ConfigStore, tenants: list[str], hot: str, rate: float,
            args: argparse.Namespace, first: int, count: int, aa: bool) -> list[dict[str, Any]]:
    """Rounds of an off and an on phase, the order alternating (whatever favours the first
    or second phase of a round hits both alike)."""
    phases = []
    for r in range(first, first + count):
        for shadow in ((False, True) if r % 2 == 0 else (True, False)):
            phases.append(_phase(url, store, tenants, hot, rate, args, r, shadow, aa))
    return phases


def _summary(phases: list[dict[str, Any]]) -> dict[str, Any]:
    """Median p99s of each kind of phase, their ratio (pooled), each round's own ratio
    (neighbouring phases share the box's state) and their median, loop-lag medians."""
    p99 = {(p["round"], p["shadow"]): p["p99_ms"] for p in phases}
    ratios = [p99[(r, True)] / p99[(r, False)] for r in sorted({r for r, _ in p99})]
    off = float(np.median([v for (_, on), v in p99.items() if not on]))
    on = float(np.median([v for (_, on), v in p99.items() if on]))
    lag = {k: float(np.nanmedian([p["loop_lag_p99_ms"] for p in phases if p["shadow"] == k]))
           for k in (False, True)}
    return {"p99_ms_without_shadow": off, "p99_ms_with_shadow": on, "ratio": on / off,
            "median_round_ratio": float(np.median(ratios)), "round_ratios": ratios,
            "loop_lag_p99_ms_off": lag[False], "loop_lag_p99_ms_on": lag[True]}


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tenants", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=None, help="skip the capacity search")
    ap.add_argument("--capacity-rates", default="1000,1500,2000,2500,3000")
    ap.add_argument("--hold", type=float, default=15.0,
                    help="seconds per measured phase (8 until 2026-12-02: noisier, see README)")
    ap.add_argument("--rounds", type=int, default=6, help="off/on pairs")
    ap.add_argument("--aa-rounds", type=int, default=4,
                    help="A/A rounds after them (shadow off in both phases): the noise band")
    ap.add_argument("--shadow-worker", choices=("actor", "thread"), default="actor",
                    help="where shadow predictions run (default: a Ray actor per replica)")
    ap.add_argument("--synthetic", action="store_true",
                    help="mark requests synthetic (shadowed but never logged as pairs)")
    ap.add_argument("--aa", action="store_true",
                    help="every round A/A: 'on' phases keep shadow off too")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    return ap.parse_args()


def main() -> int:
    args = _parse()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="w-shadow-"))
    tenants = [f"t{i:05d}" for i in range(args.tenants)]
    started = time.time()
    reg = build_registry(str(workdir / "registry"), tenants)
    production = reg.production_versions()
    sample = sorted(production)[:: max(1, len(production) // 200)]
    per_model = float(np.mean([load_model(reg, production[t]).nbytes for t in sample]))
    cache_mb = args.tenants * 0.25 * per_model / 2**20  # measured footprint, as W-serve
    print(f"registry of {args.tenants} tenants x 2 versions in {time.time() - started:.0f}s; "
          f"cache {cache_mb:.1f} MB per replica; load average {_loadavg()}", flush=True)
    settings = ServeSettings.from_env(registry=reg.root, port=_free_port(), replicas=2,
                                      cache_mb=cache_mb, shadow_worker=args.shadow_worker)
    handle = start_serving(settings, app_name="w-shadow")
    store = ConfigStore(ShadowTables.for_registry(reg))
    hot = tenants[int(ZipfSampler(len(tenants), 1.1, seed=0).rank_to_index[0])]
    try:
        capacity = None if args.rate is not None else \
            _capacity(handle.url, tenants, args.capacity_rates, args.synthetic)
        if args.rate is None and capacity is None:
            print("no stage met the SLO; pass --rate", file=sys.stderr)
            return 1
        rate = args.rate if args.rate is not None else round(capacity * 0.5)  # type: ignore[operator]
        print(f"capacity {capacity} req/s -> measuring at {rate} req/s; hot tenant {hot}",
              flush=True)
        # Same seed everywhere: same hot tenant, same request sequence in every phase.
        _stage(handle.url, tenants, rate, max(5.0, args.hold / 2), 0, args.synthetic)  # warm
        phases = _rounds(handle.url, store, tenants, hot, rate, args, 0, args.rounds, args.aa)
        calibration = _rounds(handle.url, store, tenants, hot, rate, args, args.rounds,
                              args.aa_rounds, True) if args.aa_rounds else []
        store.clear_many(tenants)
    finally:
        handle.shutdown()
    return _report(args, reg, capacity, rate, hot, phases, calibration)


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def _report(args: argparse.Namespace, reg: Registry, capacity: float | None, rate: float,
            hot: str, phases: list[dict[str, Any]], calibration: list[dict[str, Any]]) -> int:
    ab = _summary(phases)
    aa = _summary(calibration) if calibration else None
    band = (f"A/A band: pooled {aa['ratio']:.3f}, rounds {min(aa['round_ratios']):.3f}-"
            f"{max(aa['round_ratios']):.3f} (median {aa['median_round_ratio']:.3f})"
            if aa else "no A/A rounds")
    pairs = _pairs_logged(reg)
    doc = {"workload": "W-shadow", "tenants": args.tenants, "capacity_rps": capacity,
           "shadow_worker": args.shadow_worker, "synthetic": args.synthetic, "aa": args.aa,
           "pairs_logged": pairs, "rate_rps": rate, "hot_tenant": hot, "hold_s": args.hold,
           "load_average_end": _loadavg(), "phases": phases + calibration, **ab,
           "aa_calibration": aa, "target_ratio": 1.1}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = ("w_shadow" + ("_thread" if args.shadow_worker == "thread" else "")
            + ("_synthetic" if args.synthetic else "") + ("_aa" if args.aa else "") + ".json")
    (out / name).write_text(json.dumps(doc, indent=2))
    print(f"W-shadow: production p99 {ab['p99_ms_without_shadow']:.2f} ms without shadow, "
          f"{ab['p99_ms_with_shadow']:.2f} ms with shadow -> ratio {ab['ratio']:.3f}, median "
          f"of the rounds' ratios {ab['median_round_ratio']:.3f} (target <= 1.1); {band}; "
          f"hot replica loop lag p99 {ab['loop_lag_p99_ms_off']:.2f} ms off, "
          f"{ab['loop_lag_p99_ms_on']:.2f} ms on; {pairs} pairs logged; load average "
          f"{_loadavg()}; {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
