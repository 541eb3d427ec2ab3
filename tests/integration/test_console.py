"""The web console in a real browser: `tenantry console` as a process, headless Debian
Chromium driven by selenium through Debian's chromedriver (never a downloaded browser).

Each page is loaded, its content checked and a screenshot saved (in the test's tmp dir;
with TENANTRY_UPDATE_SCREENSHOTS=1 they are copied to docs/console/ for the README). An admin promotes from the
tenant page's form; a tenant key, a wrong token or no token cannot move an alias.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from engine.serving.auth import add_key
from engine.shadow.config import ConfigStore, build_config
from engine.shadow.tables import PAIRS, SCHEMAS, ShadowTables
from registry import AliasMove, NewVersion, Registry
from tests.conftest import train_tiny

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "console"
FEATURES = ("txn_amount", "account_age_days", "txn_velocity_1h", "chargeback_rate", "ip_risk")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-quic", "--window-size=1280,1000", "--hide-scrollbars")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed "
                                "(pip install -e '.[dev]')")
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip("Debian chromium + chromium-driver not installed (make browser installs them "
                "as root)", allow_module_level=True)

from selenium.webdriver.common.by import By  # after the skip checks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _model(seed: int) -> bytes:
    return train_tiny(seed, features=FEATURES, rows=300)


def _registry(root: Path) -> Registry:
    """30 tenants over five nights, a held-back shadow, pairs, monitoring, a rollback."""
    reg = Registry.create(str(root), num_shards=4)
    tenants = ["acme", "globex", "initech", "umbrella"] + [f"tenant-{i:03d}" for i in range(26)]
    data = _model(1)
    rng = np.random.default_rng(7)
    for night in range(5):
        run = f"train-2026-11-{night + 20}"
        staged = [reg.stage_artifact(t, data, run) for t in tenants]
        aucs = {s.tenant_id: float(0.78 + 0.1 * rng.random()) for s in staged}
        reg.publish(run, [NewVersion(s, FEATURES, {"auc": aucs[s.tenant_id],
                                                   "logloss": 0.62 - aucs[s.tenant_id] / 2,
                                                   "n_train": 900 + 10 * night},
                                     data_date=f"2026-11-{night + 20}") for s in staged],
                    [AliasMove(s.tenant_id, "shadow" if (night == 4 and s.tenant_id == "acme")
                               else "production", s.version, "gate: AUC within tolerance")
                     for s in staged],
                    run_record={"date": f"2026-11-{night + 20}", "trained": len(tenants),
                                "skipped": 2, "failed": 1, "published": len(tenants),
                                "promoted": len(tenants) - int(night == 4),
                                "shadowed": int(night == 4),
                                "elapsed_s": 40.0 + night,
                                "reasons": {"too_few_rows": 1, "one_class": 1, "exception": 1},
                                "failures": [
                                    {"tenant_id": "tiny-co", "status": "skipped",
                                     "reason": "too_few_rows", "detail": "31 rows < 200"},
                                    {"tenant_id": "mono-co", "status": "skipped",
                                     "reason": "one_class", "detail": "no positives"},
                                    {"tenant_id": "flaky-co", "status": "failed",
                                     "reason": "exception", "detail": "ValueError: nan"}]})
    reg.rollback("globex", actor="alice", reason="complaints about v5")
    ConfigStore(ShadowTables.for_registry(reg)).set(build_config(
        "acme", 0.25, 5, actor="alice", reason="compare the held-back v5 on live traffic"))
    now = datetime.now(UTC)
    prod = rng.random(400)
    shadow = np.clip(prod + rng.normal(0.01, 0.04, 400), 0, 1)
    ShadowTables.for_registry(reg).append(PAIRS, pa.table({
        "date": [f"{now:%Y-%m-%d}"] * 400, "ts": [now] * 400,
        "request_id": [f"r{i}" for i in range(400)], "row": [0] * 400,
        "tenant_id": ["acme"] * 400, "production_version": [4] * 400,
        "shadow_version": [5] * 400, "production": prod, "shadow": shadow,
        "abs_diff": np.abs(prod - shadow), "production_latency_ms": rng.gamma(2, 0.5, 400),
        "shadow_latency_ms": rng.gamma(2, 0.7, 400), "replica": ["r1"] * 400},
        schema=SCHEMAS[PAIRS]))
    write_deltalake(reg.store.uri("monitoring"), pa.table({
        "tenant_id": ["acme"], "version": [4], "date": ["2026-11-24"], "rows": [5200],
        "score_psi": [0.27], "flagged": [True],
        "reasons": [["score PSI 0.27 > 0.25", "txn_amount PSI 0.41 > 0.25"]],
        "features": [json.dumps([{"name": f, "psi": p, "missing_rate": m,
                                  "reference_missing_rate": 0.01}
                                 for f, p, m in zip(FEATURES, (0.41, 0.08, 0.03, 0.12, 0.01),
                                                    (0.02, 0.01, 0.0, 0.05, 0.01))])]}))
    return reg


def _capacity_report(out: Path) -> None:
    from engine.loadtest.report import _plots, render_markdown

    stages = [{"offered_rps": r, "achieved_rps": r * (1 if r < 1600 else 0.93),
               "p50_ms": 1.2 + r / 900, "p90_ms": 2.0 + r / 500, "p99_ms": 3 + (r / 260) ** 2,
               "error_rate": 0.0, "hit_rate": 0.91, "passed": r < 1600, "loads": 40,
               "evictions": 12, "cache_bytes": 60 * 2**20, "behind_schedule_max_ms": 0.4,
               "behind_schedule_count": 0} for r in (200, 400, 800, 1200, 1600)]
    doc = {"stages": stages, "max_rps_within_slo": 1200, "slo_p99_ms": 50,
           "url": "http://127.0.0.1:8080", "protocol": "v1", "tenants": 2000, "zipf_s": 1.1,
           "workers": 1, "hold_s": 10, "notes": [],
           "recommendation": {"replicas": 3, "target_rps": 3000, "target_tenants": 2000,
                              "cache_mb_per_replica": 96.0, "headroom": 0.3,
                              "per_replica_rps": 1200, "cache_models_per_replica": 500,
                              "cache_models_total": 1500, "target_hit_rate": 0.9},
           "trace_hit_ratio_curve": {"points": [[0, 0], [100, 0.6], [500, 0.88],
                                                [2000, 1.0]]},
           "report_files": []}
    out.mkdir(parents=True)
    _plots(doc, out)
    (out / "report.md").write_text(render_markdown(doc))
    (out / "loadtest.json").write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """`tenantry console` on loopback with keys and reports, and its registry."""
    work = tmp_path_factory.mktemp("console")
    reg = _registry(work / "registry")
    _capacity_report(work / "reports" / "2026-11-28-w-serve")
    keys = str(work / "keys.json")
    admin, tenant_key = add_key(keys, None), add_key(keys, "acme")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "console", "--registry", reg.root, "--port",
         str(port), "--api-keys", keys, "--reports", str(work / "reports")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"console did not start: {proc.communicate()[0]}")
        time.sleep(0.1)
    try:
        yield SimpleNamespace(url=url, reg=reg, admin=admin, tenant_key=tenant_key, work=work)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def browser(console: SimpleNamespace) -> Iterator[Any]:
    """Headless Chromium reading as the admin (HTTP Basic, sent by the browser)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={console.work / 'chromium-profile'}")
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    basic = base64.b64encode(f"admin:{console.admin}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                           {"headers": {"Authorization": f"Basic {basic}"}})
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver: Any, tmp_path: Path, name: str) -> None:
    """A full-page screenshot into tmp_path; copied to docs/console/NAME.png only when
    ``TENANTRY_UPDATE_SCREENSHOTS=1`` (so a test run leaves the checkout as it was)."""
    deadline = time.monotonic() + 10
    while _images_loaded(driver) and time.monotonic() < deadline:
        time.sleep(0.05)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height) + 40, 600), 4000))
    path = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000, f"{name}: an empty-looking screenshot"
    if os.environ.get("TENANTRY_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS / f"{name}.png")
    driver.set_window_size(1280, 1000)


def _images_loaded(driver: Any) -> list[str]:
    """The ``src`` of every image that did not load."""
    return driver.execute_script(
        "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0)"
        ".map(i => i.src)")


def _submit(driver: Any, form: Any) -> None:
    """Click ``form``'s button and wait until the answer page has replaced the form's page
    (reading the new page before that finds the old page's elements, or stale ones)."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    form.find_element(By.CSS_SELECTOR, "button").click()
    WebDriverWait(driver, 15).until(expected_conditions.staleness_of(form))
    WebDriverWait(driver, 15).until(
        lambda d: d.execute_script("return document.readyState") == "complete")


def _navigate(driver: Any, action: Any) -> None:
    """Run ``action`` (a click or a submit that loads a page) and wait until the new page
    has replaced the old one and finished loading."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    action()
    WebDriverWait(driver, 15).until(expected_conditions.staleness_of(old))
    WebDriverWait(driver, 15).until(
        lambda d: d.execute_script("return document.readyState") == "complete")


def _alias(console: SimpleNamespace, tenant: str, alias: str = "production") -> int | None:
    return Registry.open(console.reg.root).new_snapshot().alias_version(tenant, alias)


def test_tenants_page_searches_sorts_and_pages(console: Any, browser: Any,
                                               tmp_path: Path) -> None:
    browser.get(f"{console.url}/tenants?per_page=25")
    assert "30 of 30 tenants" in browser.find_element(By.ID, "summary").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#tenants tbody tr")) == 25
    assert "page 1 of 2" in browser.find_element(By.ID, "pager").text
    _navigate(browser, browser.find_element(By.CSS_SELECTOR, "a[rel=next]").click)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#tenants tbody tr")) == 5
    _navigate(browser, browser.find_element(By.LINK_TEXT, "AUC").click)
    _navigate(browser, browser.find_element(By.LINK_TEXT, "AUC").click)  # again: highest first
    aucs = [float(td.text) for td in
            browser.find_elements(By.CSS_SELECTOR, "#tenants tbody td:nth-child(7)")]
    assert aucs == sorted(aucs, reverse=True)
    _shot(browser, tmp_path, "tenants")
    box = browser.find_element(By.NAME, "q")
    box.clear()
    box.send_keys("ac")
    _navigate(browser, box.submit)
    names = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#tenants tbody a")]
    assert names == ["acme"]


def test_tenant_page_shows_versions_audit_drift_and_shadow(console: Any, browser: Any,
                                                           tmp_path: Path) -> None:
    browser.get(f"{console.url}/tenants/globex")
    audit = browser.find_element(By.ID, "audit").text
    assert "production rolled back to v4" in audit and "alice" in audit
    assert "complaints about v5" in audit
    browser.get(f"{console.url}/tenants/acme")
    assert browser.find_element(By.ID, "tenant").text == "acme"
    assert browser.find_element(By.ID, "production").text == "v4"
    assert browser.find_element(By.ID, "shadow-alias").text == "v5"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#versions tbody tr")) == 5
    drift = browser.find_element(By.ID, "monitoring").text
    assert "drift flagged" in drift and "txn_amount" in drift and "0.4100" in drift
    assert "400 (400 requests)" in browser.find_element(By.ID, "pairs").text
    assert "Mirroring 25% of requests to v5" in browser.find_element(By.ID, "shadow").text
    audit = browser.find_element(By.ID, "audit").text
    assert "shadow mirroring 25% to v5" in audit and "alice" in audit
    assert browser.find_element(By.ID, "metrics-chart").get_attribute("naturalWidth") != "0"
    assert browser.find_element(By.ID, "shadow-chart").get_attribute("naturalWidth") != "0"
    assert _images_loaded(browser) == []
    _shot(browser, tmp_path, "tenant")


def test_admin_promotes_from_the_form_and_the_audit_trail_says_who_and_why(
        console: Any, browser: Any, tmp_path: Path) -> None:
    browser.get(f"{console.url}/tenants/initech")
    form = browser.find_element(By.ID, "promote-form")
    form.find_element(By.CSS_SELECTOR, "select[name=version] option[value='3']").click()
    form.find_element(By.NAME, "reason").send_keys("v5 underperforms on weekends")
    form.find_element(By.NAME, "admin_token").send_keys(console.admin)
    _submit(browser, form)
    assert "Done: production → v3" in browser.find_element(By.ID, "done").text
    assert browser.find_element(By.ID, "production").text == "v3"
    newest = browser.find_element(By.CSS_SELECTOR, "#audit tbody tr").text
    assert "production → v3" in newest and "admin" in newest
    assert "v5 underperforms on weekends" in newest
    assert _alias(console, "initech") == 3
    event = Registry.open(console.reg.root).alias_events("initech")[0]
    assert (event.actor, event.reason) == ("admin", "v5 underperforms on weekends")


def test_a_tenant_key_or_no_token_cannot_move_an_alias(console: Any, browser: Any) -> None:
    before = _alias(console, "acme")
    browser.get(f"{console.url}/tenants/acme")
    form = browser.find_element(By.ID, "rollback-form")
    form.find_element(By.NAME, "reason").send_keys("should not happen")
    form.find_element(By.NAME, "admin_token").send_keys(console.tenant_key)
    _submit(browser, form)
    assert "403" in browser.find_element(By.TAG_NAME, "h1").text
    assert "admin token required" in browser.find_element(By.ID, "error").text
    with httpx.Client(base_url=console.url) as client:
        url = "/tenants/acme/rollback"
        form_data = {"reason": "nope"}
        assert client.post(url, data=form_data).status_code == 401
        assert client.post(url, data={**form_data, "admin_token": console.tenant_key}
                           ).status_code == 403
        assert client.post(url, data=form_data, headers={
            "authorization": f"Bearer {console.tenant_key}"}).status_code == 403
        # the browser's own Basic credentials are not an admin token for actions
        assert client.post(url, data=form_data, auth=("admin", console.admin)
                           ).status_code == 401
        assert client.get("/tenants/globex", auth=("k", console.tenant_key)
                          ).status_code == 403
    assert _alias(console, "acme") == before == 4


def test_runs_page(console: Any, browser: Any, tmp_path: Path) -> None:
    browser.get(f"{console.url}/runs")
    rows = browser.find_elements(By.CSS_SELECTOR, "#runs > tbody > tr")
    assert len(rows) == 5 and "train-2026-11-24" in rows[0].text
    assert "too_few_rows 1" in rows[0].text and "44.0 s" in rows[0].text
    rows[0].find_element(By.TAG_NAME, "summary").click()
    assert "ValueError: nan" in rows[0].text
    _shot(browser, tmp_path, "runs")


def test_capacity_page(console: Any, browser: Any, tmp_path: Path) -> None:
    browser.get(f"{console.url}/capacity")
    report = browser.find_element(By.CSS_SELECTOR, "section.report")
    assert "2026-11-28-w-serve" in report.text and "1200 req/s" in report.text
    assert len(report.find_elements(By.CSS_SELECTOR, "table.stages tbody tr")) == 5
    plots = report.find_elements(By.CSS_SELECTOR, "img.plot")
    assert len(plots) == 4 and _images_loaded(browser) == []
    _shot(browser, tmp_path, "capacity")
