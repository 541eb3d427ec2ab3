"""``tenantry demo``: the main job end to end on this machine.

Generates a few hundred tenants' data over a few days, trains the last two days (the
second run's gate promotes some tenants and holds others back as shadow), shows the
registry, serves it on Ray Serve, sends a short burst of skewed open-loop traffic and
prints latency and hit rate, then mirrors a held-back tenant's traffic to its shadow model
and prints the shadow report.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.cli.output import open_registry

if TYPE_CHECKING:
    from registry import Registry

__all__ = ["add_commands", "run_demo"]


def _say(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def _train(data: str, registry: Registry, env: Mapping[str, str]) -> list[str]:
    from training import FeatureTable, run_training
    from training.settings import TrainingSettings

    dates = sorted(FeatureTable(data).dates())
    settings = TrainingSettings.from_env(env).with_overrides(progress=False)
    for date in dates[-2:]:
        report = run_training(data, registry, date=date, settings=settings)
        print(f"train {date}: trained {report.trained}, skipped {report.skipped}, failed "
              f"{report.failed}, published {report.published}, promoted {report.promoted}, "
              f"shadowed {report.shadowed} ({report.models_per_s:.1f} models/s)", flush=True)
    return dates


def _burst(url: str, registry: str) -> None:
    from engine.loadtest import LoadTestConfig, run_loadtest
    from engine.loadtest.tenants import registry_tenants

    tenants = registry_tenants(registry, None)
    run = run_loadtest(LoadTestConfig(url=url, tenants=tenants.ids, widths=tenants.widths,
                                      rates=(50.0, 100.0, 200.0), hold_s=5.0, ramp_s=0.5,
                                      stop_on_fail=False, refine=False))
    print(f"{'offered/s':>10} {'achieved/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
          f"{'hit rate':>9}")
    for s in run.stages:
        hit = f"{s.hit_rate:.3f}" if s.hit_rate is not None else "n/a"
        print(f"{s.offered_rps:>10.0f} {s.achieved_rps:>11.1f} {s.p50_ms:>8.2f} "
              f"{s.p99_ms:>8.2f} {s.error_rate:>7.3%} {hit:>9}")


def _shadow(url: str, registry: Any) -> None:
    from engine.shadow import ConfigStore, ShadowTables, build_config, shadow_report

    held = [t for t in registry.list_tenants() if t.shadow_version is not None]
    if not held:
        print("the gate held no tenant back this time; nothing to shadow")
        return
    tenant = held[0].tenant_id
    tm = registry.get(tenant)
    print(f"tenant {tenant}: production v{tm.production.version} "
          f"(auc {tm.production.metrics.get('auc', float('nan')):.3f}), held-back shadow "
          f"v{tm.shadow.version} (auc {tm.shadow.metrics.get('auc', float('nan')):.3f})")
    ConfigStore(ShadowTables.for_registry(registry)).set(build_config(tenant, 1.0))
    time.sleep(3.0)  # replicas pick the config up within ~1 s
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    width = len(tm.production.feature_names)
    rng = random.Random(0)
    for _ in range(300):
        row = [rng.gauss(0, 1) for _ in range(width)]
        conn.request("POST", f"/v1/tenants/{tenant}/predict", json.dumps({"instances": [row]}),
                     {"content-type": "application/json"})
        conn.getresponse().read()
    time.sleep(4.0)  # the demo's pair log flushes every ~2 s
    report = shadow_report(registry, tenant)
    print(report.text())


def run_demo(tenants: int, days: int, workdir: str, registry_root: str, port: int,
             env: Mapping[str, str]) -> int:
    """Run every stage of the demo; returns an exit code.

    Args:
        env: the environment ``main`` read (``TENANTRY_TRAIN_*`` tune the training runs).
    """
    from engine.serving.launch import start_serving
    from engine.settings import ServeSettings
    from training import FeatureTable, GeneratorConfig, generate

    root = Path(workdir)
    data = str(root / "features")
    _say(f"1. data: {tenants} tenants x {days} days -> {data}")
    summary = generate(data, GeneratorConfig(tenants=tenants, days=days, seed=42),
                       overwrite=True)
    print(summary)
    _say("2. nightly training, last two days (Ray Data; one registry commit per run)")
    import shutil

    shutil.rmtree(registry_root, ignore_errors=True)
    # Training never creates a registry: make it with the table's shard count first.
    reg = open_registry(registry_root, env, FeatureTable(data).num_shards() or 16)
    _train(data, reg, env)
    rows = reg.list_tenants()
    _say("3. registry")
    print(f"{len(rows)} tenants, {sum(r.production_version is not None for r in rows)} in "
          f"production, {sum(r.shadow_version is not None for r in rows)} held back as shadow")
    for r in rows[:8]:
        print(f"  {r.tenant_id:<12} shard {r.shard:>2}  production v{r.production_version}  "
              f"shadow {('v' + str(r.shadow_version)) if r.shadow_version else '-'}")
    _say("4. serving: an HAProxy ingress + 2 model-host replicas on Ray Serve")
    handle = start_serving(ServeSettings(registry=registry_root, port=port, replicas=2,
                                         cache_mb=4.0, shadow_flush_s=2.0),
                           storage_options=reg.storage_options)
    try:
        print(f"serving at {handle.url}")
        _say("5. a burst of Zipf(1.1) open-loop traffic")
        _burst(handle.url, registry_root)
        _say("6. shadow mode on a tenant the gate held back")
        _shadow(handle.url, reg)
    finally:
        handle.shutdown()
    _say("done")
    print(f"registry: {registry_root}  (try: tenantry registry list --registry {registry_root})")
    return 0


def _handler(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    return run_demo(args.tenants, args.days, args.workdir, args.registry, args.port, env)


def add_commands(sub: Any, parent: argparse.ArgumentParser) -> None:
    """Register ``tenantry demo``."""
    p = sub.add_parser("demo", parents=[parent], help="run the main job end to end")
    p.add_argument("--tenants", type=int, default=300)
    p.add_argument("--days", type=int, default=3)
    p.add_argument("--workdir", default="./tenantry-data", help="where the feature table goes")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(handler=_handler)
