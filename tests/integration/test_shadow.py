"""Shadow mode over real loopback HTTP: ingress (HAProxy) -> two model hosts on Ray Serve."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import xgboost as xgb
from prometheus_client.parser import text_string_to_metric_families

from engine.shadow import ShadowTables, compare, shadow_report
from engine.shadow.tables import PAIRS
from registry import Registry
from tests.conftest import wait_for
from training.cluster import WORKER_NICENESS

from .conftest import FEATURES, publish, train_bytes

pytestmark = pytest.mark.timeout(600)

TENANT = "shadow-t1"
TENANTRY = str(Path(sys.executable).with_name("tenantry"))


def _booster(data: bytes) -> xgb.Booster:
    b = xgb.Booster()
    b.load_model(bytearray(data))
    return b


def _send(client: httpx.Client, rows: np.ndarray, prefix: str,
          synthetic: bool = False) -> list[list[float]]:
    out = []
    for i, row in enumerate(rows):
        headers = {"x-request-id": f"{prefix}-{i}"}
        if synthetic:
            headers["x-tenantry-synthetic"] = "1"
        resp = client.post(f"/v1/tenants/{TENANT}/predict",
                           json={"instances": [[float(v) for v in row]]}, headers=headers)
        assert resp.status_code == 200, resp.text
        out.append(resp.json()["predictions"])
    return out


def _replica_with_worker_stats(client: httpx.Client) -> dict[str, Any] | None:
    replica: dict[str, Any] = client.get(f"/v1/tenants/{TENANT}/shadow").json()["replica"]
    return replica if "pid" in replica["worker"] else None


def _shadow_counts(client: httpx.Client) -> dict[str, float]:
    """The app's shadow outcome counters and pair count, from /metrics."""
    out = {}
    for fam in text_string_to_metric_families(client.get("/metrics").text):
        for s in fam.samples:
            if s.name == "tenantry_shadow_requests_total":
                out[s.labels["outcome"]] = s.value
            elif s.name == "tenantry_shadow_abs_diff_count":
                out["abs_diff_count"] = s.value
    return out


def _logged(reg: Registry) -> Any:
    log = ShadowTables.for_registry(reg).query(PAIRS).to_pandas()
    return log[log["tenant_id"] == TENANT]


def test_shadow_mirrors_logs_reports_and_stops(serving: Any, served_registry: Any) -> None:
    prod_bytes, shadow_bytes = train_bytes(101), train_bytes(202, rounds=14)
    publish(served_registry, {TENANT: prod_bytes}, "shadow-t1-prod")
    publish(served_registry, {TENANT: shadow_bytes}, "shadow-t1-shadow", alias="shadow")
    rows = np.random.default_rng(7).normal(size=(30, len(FEATURES)))
    reg = Registry.open(served_registry.root)

    with httpx.Client(base_url=serving.url, timeout=30) as client:
        wait_for(lambda: client.get(f"/v1/tenants/{TENANT}/model").status_code == 200)
        off = _send(client, rows, "off")

        resp = client.put(f"/v1/admin/tenants/{TENANT}/shadow", json={"fraction": 1.0})
        assert resp.status_code == 200, resp.text
        assert resp.json()["config"]["fraction"] == 1.0
        # v2 resolves through the shadow alias once the answering replica's snapshot has
        # seen the second publish (it may have refreshed between the two).
        wait_for(lambda: client.get(f"/v1/tenants/{TENANT}/shadow").json()["shadow_version"] == 2)
        assert client.put(f"/v1/admin/tenants/{TENANT}/shadow",
                          json={"fraction": 3}).status_code == 422
        time.sleep(2.0)  # every replica re-reads the config table within ~1 s

        before = _shadow_counts(client)  # other tests (faults) mirror too: count from here
        on = _send(client, rows, "on")
        assert on == off  # the client only ever sees the production answer
        _send(client, rows[:10], "syn", synthetic=True)

        wait_for(lambda: len(_logged(reg)) >= len(rows))
        # Shadow predictions ran in a worker process of their own, at idle priority, which
        # read them from the replica's spool; the replica reads its counters from there.
        worker = wait_for(lambda: _replica_with_worker_stats(client))
        assert worker["worker"]["kind"] == "actor", worker
        assert worker["spool"]["appended"] >= len(rows) and worker["loop_lag"], worker
        assert worker["worker"]["pid"] != worker["pid"] and worker["worker"]["priority"] == "idle"
        assert worker["niceness"] == WORKER_NICENESS  # production: normal priority, not Ray's 15
        time.sleep(2.5)  # one more flush period: nothing else should arrive
        log = _logged(reg)
        ids = set(log["request_id"])
        assert ids == {f"on-{i}" for i in range(len(rows))}  # no synthetic, none before set

        # Known models: both predictions are what the artifacts give offline.
        order = log.assign(i=log["request_id"].str[3:].astype(int)).sort_values("i")
        prod = _booster(prod_bytes).inplace_predict(rows).astype(np.float64)
        shadow = _booster(shadow_bytes).inplace_predict(rows).astype(np.float64)
        np.testing.assert_allclose(order["production"], prod, atol=1e-6)
        np.testing.assert_allclose(order["shadow"], shadow, atol=1e-6)

        report = json.loads(subprocess.run(
            [TENANTRY, "shadow", "report", TENANT, "--registry", served_registry.root,
             "--json"], check=True, capture_output=True, text=True, timeout=120).stdout)
        expected = compare(prod, shadow)
        assert (report["production_version"], report["shadow_version"]) == (1, 2)
        assert report["pairs"] == len(rows) and report["dropped"] == 0
        for key in ("agreement", "mean_abs_diff", "max_abs_diff", "psi", "ks"):
            assert report[key] == pytest.approx(getattr(expected, key), abs=1e-6), key

        after = _shadow_counts(client)
        assert {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k)} \
            == {"ok": 30.0, "synthetic": 10.0, "abs_diff_count": 30.0}

        # A window that ends: nothing sent after `until` is mirrored.
        until = datetime.now(UTC) + timedelta(seconds=3)
        resp = client.put(f"/v1/admin/tenants/{TENANT}/shadow",
                          json={"fraction": 1.0, "until": until.isoformat()})
        assert resp.status_code == 200, resp.text
        time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 0.5)
        _send(client, rows[:10], "late")
        time.sleep(4.5)  # two flush periods
        assert not any(r.startswith("late") for r in _logged(reg)["request_id"])
        shown = client.get(f"/v1/tenants/{TENANT}/shadow").json()
        assert shown["config"]["active"] is False

        assert client.delete(f"/v1/admin/tenants/{TENANT}/shadow").status_code == 200
        assert shadow_report(reg, TENANT).config is None
