"""Faults under steady load on the session's app, with ``benchmarks/faults.py``'s scenarios.

The cheap ones: a model host, the ingress's HAProxy and a shadow worker SIGKILLed, the
directory actor killed, the registry's index unreadable for a few seconds,
publish/rollback/promote under load. The
app is shared with other tests, so each scenario waits until it is whole again (every
replica routed, registry fresh) and the module's tenants and shadow config are its own
and cleared at the end.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from engine.shadow import ConfigStore, ShadowTables, build_config
from tests.conftest import wait_for

from .conftest import publish, train_bytes

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[2]


def _load_faults() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tenantry_faults",
                                                  ROOT / "benchmarks" / "faults.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


faults = _load_faults()


@pytest.fixture(scope="module")
def target(serving: Any, served_registry: Any) -> Iterator[Any]:
    """The session app with tenants of this module's own, one shadowed at 100%."""
    tenants = [faults.SHADOWED] + [f"fault-{i:02d}" for i in range(5)]
    publish(served_registry, {t: train_bytes(60 + i) for i, t in enumerate(tenants)},
            "faults-prod")
    publish(served_registry, {faults.SHADOWED: train_bytes(70, rounds=12)}, "faults-cand",
            alias="shadow")
    store = ConfigStore(ShadowTables.for_registry(served_registry))
    store.set(build_config(faults.SHADOWED, 1.0))
    tgt = faults.Target(serving.url, "itest", served_registry.root, tenants,
                        serving.settings.replicas, serving.settings.shadow_flush_s,
                        rate=25.0, phase_s=3.0, outage_s=6.0)
    # Every replica knows the tenants and the shadowed one's worker answers.
    wait_for(lambda: tgt.get(f"/v1/tenants/{tenants[-1]}/model") is not None
             and "tenant_id" in (tgt.get(f"/v1/tenants/{tenants[-1]}/model") or {}),
             timeout=60)
    wait_for(lambda: "pid" in tgt.shadow_stats().get("worker", {}) or faults._poke(tgt),
             timeout=120, every=1.0)
    yield tgt
    store.clear(faults.SHADOWED)
    wait_for(tgt.whole, timeout=120)


def _whole_again(tgt: Any) -> None:
    assert faults.wait_until(tgt.whole, limit_s=120) is not None, tgt.get("/readyz")


def test_killed_model_host_is_replaced(target: Any) -> None:
    row = faults.kill_host(target)
    _whole_again(target)
    print(row)
    assert row.recovery_s is not None, row
    assert row.failed_after_recovery == 0, row
    assert row.failed <= 0.05 * row.requests, row  # only what the dead host held
    # Its spool outlived it: the replica that took its place adopted it and logged the rest.
    assert row.data_lost.startswith("0 of") and row.duplicated == 0, row


def test_killed_haproxy_is_restarted(target: Any) -> None:
    row = faults.kill_ingress(target)
    _whole_again(target)
    print(row)
    assert row.recovery_s is not None and row.recovery_s < 15, row
    assert row.failed_after_recovery == 0, row
    assert row.data_lost.startswith("0 of") and row.duplicated == 0, row


def test_killed_shadow_worker_never_reaches_clients(target: Any) -> None:
    row = faults.kill_shadow_worker(target)
    _whole_again(target)
    print(row)
    assert row.recovery_s is not None, row
    assert row.failed == 0, row
    assert row.data_lost.startswith("0 of") and row.duplicated == 0, row  # resent, once


def test_killed_directory_costs_no_request(target: Any) -> None:
    # Restarted empty, the directory lists nobody until the hosts heartbeat back: the
    # ingress keeps its slots meanwhile (it used to empty them all and answer 503).
    row = faults.kill_directory(target)
    _whole_again(target)
    print(row)
    assert row.recovery_s is not None, row
    assert row.failed == 0, row


def test_unreadable_registry_serves_the_last_snapshot_and_says_stale(target: Any) -> None:
    row = faults.registry_unreadable(target)
    _whole_again(target)
    print(row)
    assert row.failed == 0, row
    assert row.stale_seen, row
    assert row.recovery_s is not None, row
    assert row.data_lost.startswith("0 of") and row.duplicated == 0, row


def test_publish_rollback_promote_under_load_fail_nothing(target: Any) -> None:
    row = faults.publish_promote_rollback(target)
    print(row)
    assert row.failed == 0, row
    assert row.recovery_s is not None, row  # every answer carries the promoted version
    assert row.data_lost.startswith("0 of") and row.duplicated == 0, row
