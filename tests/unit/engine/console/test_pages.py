"""Console pages through the ASGI app (no browser): content, auth rules, actions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import write_deltalake
from starlette.testclient import TestClient

from engine.console import ConsoleSettings, build_console, create_app
from engine.console.reports import scan_reports
from engine.serving.auth import add_key
from engine.shadow.tables import PAIRS, SCHEMAS, ShadowTables
from registry import Registry


def _client(root: str, keys_file: str = "", reports: str = "") -> TestClient:
    settings = ConsoleSettings(registry=root, api_keys_file=keys_file, reports_dir=reports)
    return TestClient(create_app(settings, build_console(settings), refresher=False))


@pytest.fixture()
def reg(tmp_path: Path, h: Any) -> Registry:
    return h.registry(tmp_path / "registry")


def test_read_only_pages(reg: Registry, tmp_path: Path) -> None:
    client = _client(reg.root)
    page = client.get("/tenants?q=ac")
    assert page.status_code == 200 and "acme" in page.text and "globex" not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    tenant = client.get("/tenants/acme").text
    for text in ("v3", "production", "no monitoring yet", "Not shadowed now", "run run-2",
                 "gate: better", "Read-only"):
        assert text in tenant, text
    svg = client.get("/tenants/acme/metrics.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in svg.content and b"AUC" in svg.content
    runs = client.get("/runs").text
    assert "run-2" in runs and "too_few_rows 1" in runs and "12.5 s" in runs
    assert "--reports DIR" in client.get("/capacity").text
    assert client.get("/tenants/nobody").status_code == 404
    assert client.get("/tenants/bad%20id").status_code == 422
    assert client.get("/static/console.css").status_code == 200


def test_monitoring_and_shadow_sections(reg: Registry) -> None:
    write_deltalake(reg.store.uri("monitoring"), pa.table({
        "tenant_id": ["acme", "acme"], "version": [2, 3], "date": ["2026-11-21", "2026-11-22"],
        "rows": [500, 640], "score_psi": [0.05, 0.31], "flagged": [False, True],
        "reasons": [[], ["score_psi 0.31 > 0.25"]],
        "features_json": ["[]", json.dumps([
            {"name": "txn_amount", "psi": 0.42, "missing_rate": 0.01,
             "reference_missing_rate": 0.0},
            {"name": "ip_risk", "psi": 0.02, "missing_rate": 0.0,
             "reference_missing_rate": 0.0}])]}))
    now = datetime.now(UTC)
    ShadowTables.for_registry(reg).append(PAIRS, pa.table({
        "date": [f"{now:%Y-%m-%d}"] * 3, "ts": [now] * 3, "request_id": ["r1", "r2", "r3"],
        "row": [0, 0, 0], "tenant_id": ["acme"] * 3, "production_version": [3] * 3,
        "shadow_version": [2] * 3, "production": [0.2, 0.5, 0.9], "shadow": [0.25, 0.4, 0.9],
        "abs_diff": [0.05, 0.1, 0.0], "production_latency_ms": [1.0] * 3,
        "shadow_latency_ms": [2.0] * 3, "replica": ["r"] * 3}, schema=SCHEMAS[PAIRS]))
    client = _client(reg.root)
    page = client.get("/tenants/acme").text
    assert "drift flagged" in page and "txn_amount" in page and "0.4200" in page
    assert page.index("txn_amount") < page.index("ip_risk")  # worst feature first
    assert 'id="pairs">3 (3 requests)' in page and "shadow.svg" in page
    svg = client.get("/tenants/acme/shadow.svg").content
    assert b"<svg" in svg and b"3 pairs" in svg
    assert "no monitoring yet" in client.get("/tenants/globex").text


def test_capacity_reports_and_their_plots(reg: Registry, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    (reports / "night-1").mkdir(parents=True)
    (reports / "night-1" / "loadtest.json").write_text(json.dumps({
        "stages": [{"offered_rps": 100, "achieved_rps": 99.5, "p50_ms": 2.0, "p99_ms": 9.0,
                    "error_rate": 0.0, "hit_rate": 0.93, "passed": True}],
        "max_rps_within_slo": 100, "slo_p99_ms": 50, "url": "http://127.0.0.1:8080",
        "recommendation": {"replicas": 3, "target_rps": 900, "target_tenants": 2000,
                           "cache_mb_per_replica": 96.0}}))
    (reports / "night-1" / "latency.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (reports / "broken").mkdir()
    (reports / "broken" / "loadtest.json").write_text("{nope")
    assert [r.key for r in scan_reports(reports)] == ["night-1"]
    client = _client(reg.root, reports=str(reports))
    page = client.get("/capacity").text
    assert "night-1" in page and "100 req/s" in page and "3 replicas" in page
    plot = client.get("/capacity/plot", params={"report": "night-1", "name": "latency.png"})
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    for name in ("../loadtest.json", "loadtest.json", "/etc/passwd"):
        assert client.get("/capacity/plot", params={"report": "night-1",
                                                    "name": name}).status_code == 404


def test_keys_guard_pages_and_actions(reg: Registry, tmp_path: Path) -> None:
    keys = str(tmp_path / "keys.json")
    tenant_key, admin = add_key(keys, "acme"), add_key(keys, None)
    client = _client(reg.root, keys)
    resp = client.get("/tenants")
    assert resp.status_code == 401 and resp.headers["www-authenticate"].startswith("Basic")
    assert client.get("/tenants", auth=("x", admin)).status_code == 200
    assert client.get("/tenants/acme", auth=("x", tenant_key)).status_code == 200
    assert client.get("/tenants/globex", auth=("x", tenant_key)).status_code == 403
    assert client.get("/tenants", headers={"x-api-key": tenant_key}).status_code == 403
    form = {"version": "1", "alias": "production", "reason": "try"}
    assert client.post("/tenants/acme/promote", data=form).status_code == 401
    assert client.post("/tenants/acme/promote", data={**form, "admin_token": tenant_key}
                       ).status_code == 403
    # Basic credentials a browser replays by itself are not an admin token for actions
    assert client.post("/tenants/acme/promote", data=form, auth=("x", admin)
                       ).status_code == 401
    assert client.post("/tenants/acme/promote", data={**form, "admin_token": admin},
                       headers={"origin": "http://evil.example"}).status_code == 403
    assert Registry.open(reg.root).new_snapshot().alias_version("acme") == 3
    assert client.post("/tenants/acme/promote", data={**form, "reason": "",
                                                      "admin_token": admin}).status_code == 422
    done = client.post("/tenants/acme/promote", data={**form, "admin_token": admin},
                       follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"].startswith("/tenants/acme?")
    assert Registry.open(reg.root).new_snapshot().alias_version("acme") == 1
    event = Registry.open(reg.root).alias_events("acme")[0]
    assert (event.actor, event.reason, event.version) == ("admin", "try", 1)
    page = client.get("/tenants/acme", auth=("x", admin)).text
    assert "production</span>" in page and ">admin<" in page and ">try<" in page


def test_actions_with_a_bearer_token(reg: Registry, tmp_path: Path) -> None:
    keys = str(tmp_path / "keys.json")
    admin = add_key(keys, None)
    client = _client(reg.root, keys)
    bearer = {"authorization": f"Bearer {admin}", "accept": "application/json"}
    resp = client.post("/tenants/acme/rollback", data={"reason": "bad night"}, headers=bearer)
    assert resp.json() == {"tenant_id": "acme", "done": "production rolled back to v2"}
    resp = client.post("/tenants/acme/shadow", headers=bearer,
                       data={"version": "3", "fraction": "0.25", "reason": "compare v3"})
    assert resp.status_code == 200, resp.text
    assert client.post("/tenants/acme/shadow", headers=bearer, data={
        "version": "2", "fraction": "0.5", "reason": "x"}).status_code == 422  # production
    resp = client.post("/tenants/acme/shadow/clear", headers=bearer, data={"reason": "done"})
    assert resp.status_code == 200
    page = client.get("/tenants/acme", headers={"authorization": f"Bearer {admin}"}).text
    for text in ("shadow mirroring 25% to v3", "compare v3", "shadow mirroring cleared",
                 "production rolled back to v2", "bad night"):
        assert text in page, text


def test_read_only_console_refuses_actions(reg: Registry) -> None:
    client = _client(reg.root)
    resp = client.post("/tenants/acme/rollback", data={"reason": "x", "admin_token": "t"})
    assert resp.status_code == 403 and "read-only" in resp.text
    assert Registry.open(reg.root).new_snapshot().alias_version("acme") == 3


def test_exposure_rule() -> None:
    assert ConsoleSettings(host="127.0.0.1").exposure_problem() == ""
    assert "refusing" in ConsoleSettings(host="0.0.0.0").exposure_problem()
    assert ConsoleSettings(host="0.0.0.0", api_keys_file="k").exposure_problem() == ""
    assert ConsoleSettings(host="0.0.0.0", allow_anonymous=True).exposure_problem() == ""
