from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.errors import Forbidden, Unauthorized
from engine.metrics import Metrics
from engine.serving.aggregate import merge_metrics
from engine.serving.auth import KeyStore, add_key, hash_key


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_merge_sums_counters_histograms_and_maxes_lag() -> None:
    a, b = Metrics(), Metrics()
    a.cache_hits.inc(3)
    b.cache_hits.inc(4)
    a.requests.labels("predict", "200").inc(2)
    b.requests.labels("predict", "200").inc(5)
    b.requests.labels("predict", "404").inc()
    a.model_load_seconds.observe(0.001)
    b.model_load_seconds.observe(0.2)
    a.cache_bytes.set(100)
    b.cache_bytes.set(50)
    a.registry_lag_seconds.set(0.5)
    b.registry_lag_seconds.set(2.0)
    merged = _samples(merge_metrics([a.render().decode(), b.render().decode()]))
    assert merged[("tenantry_cache_hits_total", ())] == 7
    assert merged[("tenantry_requests_total", (("code", "200"), ("route", "predict")))] == 7
    assert merged[("tenantry_requests_total", (("code", "404"), ("route", "predict")))] == 1
    assert merged[("tenantry_model_load_seconds_count", ())] == 2
    assert merged[("tenantry_model_load_seconds_bucket", (("le", "0.002"),))] == 1
    assert merged[("tenantry_model_load_seconds_bucket", (("le", "+Inf"),))] == 2
    assert merged[("tenantry_cache_bytes", ())] == 150
    assert merged[("tenantry_registry_lag_seconds", ())] == 2.0


def test_keys_are_hashed_and_scoped(tmp_path) -> None:
    path = str(tmp_path / "keys.json")
    acme = add_key(path, "acme")
    admin = add_key(path, None)
    stored = (tmp_path / "keys.json").read_text()
    assert acme not in stored and hash_key(acme) in stored
    keys = KeyStore.load(path)
    keys.check_tenant({"authorization": f"Bearer {acme}"}, "acme")
    keys.check_tenant({"x-api-key": admin}, "globex")
    with pytest.raises(Forbidden):
        keys.check_tenant({"authorization": f"Bearer {acme}"}, "globex")
    with pytest.raises(Unauthorized):
        keys.check_tenant({}, "acme")
    with pytest.raises(Unauthorized):
        keys.check_tenant({"x-api-key": "tnt_wrong"}, "acme")
    with pytest.raises(Forbidden):
        keys.check_admin({"x-api-key": acme})
    keys.check_admin({"x-api-key": admin})
    KeyStore().check_tenant({}, "anyone")  # disabled: open
    assert json.loads(stored)["tenants"][hash_key(acme)] == "acme"
