"""The HTTP API over real loopback HTTP: ingress (HAProxy) -> model hosts on Ray Serve."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import xgboost as xgb
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_for

from .conftest import FEATURES, publish, train_bytes

pytestmark = pytest.mark.timeout(600)


def metric_values(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def predict(client: httpx.Client, tenant: str, rows: Any, **kw: Any) -> httpx.Response:
    return client.post(f"/v1/tenants/{tenant}/predict", json={"instances": rows}, **kw)


def _unless(status: int, resp: httpx.Response) -> httpx.Response | None:
    """``resp`` unless it has ``status`` (to poll until an answer changes)."""
    return None if resp.status_code == status else resp


def _two_replicas(ready: dict[str, Any]) -> dict[str, Any] | None:
    return ready if ready["replicas"] == 2 else None


@pytest.fixture()
def client(serving: Any) -> Any:
    with httpx.Client(base_url=serving.url, timeout=30) as c:
        yield c


def test_online_equals_offline_to_1e6(client: httpx.Client, served_registry: Any) -> None:
    rows = np.random.default_rng(5).normal(size=(40, len(FEATURES)))
    rows[rows > 1.5] = np.nan
    payload = [[None if np.isnan(v) else float(v) for v in r] for r in rows]
    for tenant in ("t00", "t03", "t07"):
        booster = xgb.Booster()
        booster.load_model(bytearray(served_registry.read_artifact(
            served_registry.get(tenant).production)))
        offline = booster.predict(xgb.DMatrix(rows, feature_names=list(FEATURES)))
        resp = predict(client, tenant, payload)
        assert resp.status_code == 200, resp.text
        doc = resp.json()
        assert doc["tenant_id"] == tenant and doc["model_version"] == 1
        assert resp.headers["x-model-version"] == "1"
        np.testing.assert_allclose(doc["predictions"], offline, atol=1e-6)
        named = [{n: v for n, v in zip(FEATURES, r) if v is not None} for r in payload]
        np.testing.assert_allclose(predict(client, tenant, named).json()["predictions"],
                                   offline, atol=1e-6)


@pytest.mark.parametrize("tenant, rows, status, fragment", [
    ("nobody-here", [[0.0] * 5], 404, "unknown tenant"),
    ("bad%2F..id", [[0.0] * 5], 422, "invalid tenant id"),
    ("-leading", [[0.0] * 5], 422, "invalid tenant id"),
    ("t01", [[0.0] * 4], 422, "expects 5"),
    ("t01", [[0.0, "high", 0, 0, 0]], 422, "expected a number"),
    ("t01", [{"txn_amount": 1, "shoe_size": 9}], 422, "unknown feature name"),
    ("t01", [[0.0] * 5] * 1001, 422, "too many rows"),
    ("t01", [], 422, "non-empty"),
])
def test_bad_input_gets_a_clear_error(client: httpx.Client, tenant: str, rows: Any,
                                      status: int, fragment: str) -> None:
    resp = predict(client, tenant, rows)
    assert resp.status_code == status, resp.text
    assert fragment in resp.json()["detail"]


def test_nan_literal_and_non_json_are_refused(client: httpx.Client) -> None:
    resp = client.post("/v1/tenants/t01/predict", content=b'{"instances": [[NaN,0,0,0,0]]}')
    assert resp.status_code == 422 and "null" in resp.json()["detail"]
    resp = client.post("/v1/tenants/t01/predict", content=b"{{{")
    assert resp.status_code == 422 and "not valid JSON" in resp.json()["detail"]


def test_model_metadata_and_probes(client: httpx.Client) -> None:
    doc = client.get("/v1/tenants/t02/model").json()
    assert doc["production"]["version"] == 1
    assert doc["production"]["feature_names"] == list(FEATURES)
    assert doc["production"]["metrics"]["auc"] == 0.9
    assert client.get("/v1/tenants/nobody/model").status_code == 404
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["replicas"] == 2
    assert "/v1/tenants/{tenant_id}/predict" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


def test_corrupt_artifact_is_503_for_that_tenant_only(client: httpx.Client,
                                                      served_registry: Any) -> None:
    publish(served_registry, {"corrupt-1": train_bytes(50)}, "corrupt-run")
    path = Path(served_registry.get("corrupt-1").production.artifact_uri)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    path.write_bytes(bytes(raw))
    resp = wait_for(lambda: _unless(404, predict(client, "corrupt-1", [[0.0] * 5])),
                    timeout=30, what=lambda: "(replicas never saw the new tenant)")
    assert resp.status_code == 503 and "sha256" in resp.json()["detail"]
    assert predict(client, "t04", [[0.0] * 5]).status_code == 200


def test_metrics_add_up_across_replicas(client: httpx.Client, serving: Any) -> None:
    tenants = [f"t{i:02d}" for i in range(12)]
    for t in tenants:  # warm: every tenant cached on its owner replica
        assert predict(client, t, [[0.1] * 5]).status_code == 200
    before = metric_values(serving.url)
    n = 60
    for i in range(n):
        assert predict(client, tenants[i % 12], [[0.2] * 5]).status_code == 200
    assert predict(client, "t00", [[0.2] * 3]).status_code == 422
    after = metric_values(serving.url)
    ok = ("tenantry_requests_total", (("code", "200"), ("route", "predict")))
    bad = ("tenantry_requests_total", (("code", "422"), ("route", "predict")))
    assert after[ok] - before[ok] == n
    assert after[bad] - before.get(bad, 0) == 1
    lookups = sum(after[(k, ())] - before[(k, ())] for k in
                  ("tenantry_cache_hits_total", "tenantry_cache_misses_total"))
    assert lookups == n + 1
    assert after[("tenantry_cache_hits_total", ())] - before[("tenantry_cache_hits_total", ())] \
        == n + 1  # all warm: the ingress kept each tenant on the replica holding it
    assert after[("tenantry_replicas", ())] == 2
    assert after[("tenantry_request_seconds_count", (("route", "predict"),))] >= n
    assert after[("tenantry_cache_bytes", ())] > 0


def test_v2_shares_v1_tenant_affinity_and_answers_the_same(client: httpx.Client,
                                                           serving: Any) -> None:
    tenants = [f"t{i:02d}" for i in range(12)]
    rows = [[0.3, -1.0, None, 2.0, 0.5]]
    v1 = {}
    for t in tenants:  # warm through /v1: each tenant cached on the replica it hashes to
        resp = predict(client, t, rows)
        assert resp.status_code == 200
        v1[t] = resp.json()["predictions"]
    before = metric_values(serving.url)
    for t in tenants:
        body = {"inputs": [{"name": "input__0", "datatype": "FP64", "shape": [1, 5],
                            "data": rows[0]}]}
        resp = client.post(f"/v2/models/{t}/infer", json=body)
        assert resp.status_code == 200, resp.text
        (out,) = resp.json()["outputs"]
        assert out["data"] == pytest.approx(v1[t], abs=1e-6)
    after = metric_values(serving.url)
    hits = after[("tenantry_cache_hits_total", ())] - before[("tenantry_cache_hits_total", ())]
    misses = after[("tenantry_cache_misses_total", ())] - before[("tenantry_cache_misses_total",
                                                                  ())]
    assert (hits, misses) == (12, 0)  # /v2/models/{t} hashed to the same replica as /v1
    infer = ("tenantry_requests_total", (("code", "200"), ("route", "v2_infer")))
    assert after[infer] - before.get(infer, 0) == 12
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2/models/nobody").status_code == 404
    two_xx = ("tenantry_ingress_requests_total", (("code", "2xx"),))
    assert after[two_xx] - before[two_xx] >= 12


def test_hot_swap_under_load_fails_nothing(serving: Any, served_registry: Any) -> None:
    publish(served_registry, {"swap-1": train_bytes(60)}, "swap-v1")
    stop = threading.Event()
    results: list[tuple[int, str | None]] = []

    def hammer() -> None:
        with httpx.Client(base_url=serving.url, timeout=30) as c:
            while not stop.is_set() and len(results) < 20000:
                r = predict(c, "swap-1", [[0.3] * 5])
                results.append((r.status_code, r.headers.get("x-model-version")))

    with httpx.Client(base_url=serving.url) as c:
        wait_for(lambda: predict(c, "swap-1", [[0.3] * 5]).status_code == 200, timeout=30)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(hammer) for _ in range(4)]
        wait_for(lambda: len(results) >= 50, timeout=30)  # traffic on version 1
        publish(served_registry, {"swap-1": train_bytes(61)}, "swap-v2")
        wait_for(lambda: results[-1][1] == "2", timeout=20)
        swapped = len(results)
        wait_for(lambda: len(results) >= swapped + 50, timeout=30)  # and on version 2
        stop.set()
        for f in futures:
            f.result()
    codes = {code for code, _ in results}
    assert codes == {200}, f"failed requests during the swap: {codes}"
    versions = [v for _, v in results]
    assert "1" in versions and versions[-1] == "2"


def test_killed_replica_recovers_and_only_in_flight_fail(serving: Any) -> None:
    import ray

    actors = [a for a in ray.util.list_named_actors(all_namespaces=True)
              if "ModelHost" in a["name"] and "itest" in a["name"]]
    assert len(actors) == 2
    victim = ray.get_actor(actors[0]["name"], namespace=actors[0]["namespace"])
    statuses: list[int] = []
    stop = threading.Event()

    def steady() -> None:
        with httpx.Client(base_url=serving.url, timeout=30) as c:
            i = 0
            while not stop.is_set() and i < 5000:
                statuses.append(predict(c, f"t{i % 12:02d}", [[0.5] * 5]).status_code)
                i += 1
                time.sleep(0.01)

    worker = threading.Thread(target=steady)
    worker.start()
    wait_for(lambda: len(statuses) >= 50, timeout=30)
    ray.kill(victim, no_restart=False)
    killed = len(statuses)
    # traffic goes on (100 answers at least) until its tenants are answered again: the last
    # 50 answers are all 200
    wait_for(lambda: len(statuses) >= killed + 100 and set(statuses[-50:]) == {200},
             timeout=60, what=lambda: f"{statuses[killed:][-10:]}")
    stop.set()
    worker.join()
    failed = [s for s in statuses if s != 200]
    assert len(statuses) > 100
    assert len(failed) <= 2, f"{len(failed)} failures: only in-flight requests may fail"
    ready = wait_for(lambda: _two_replicas(httpx.get(f"{serving.url}/readyz").json()),
                     timeout=120, every=0.5, what=lambda: "(Serve did not bring the replica back)")
    with httpx.Client(base_url=serving.url) as c:
        assert all(predict(c, f"t{i:02d}", [[0.5] * 5]).status_code == 200 for i in range(12))
    json.dumps(ready)
