"""HAProxy's ``show stat`` rows become tenantry series; the exposure rule of serving."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.ingress.stats import ingress_page, up_slots
from engine.serving.aggregate import merge_metrics
from engine.settings import ServeSettings

ROWS = [
    {"pxname": "tenantry", "svname": "FRONTEND", "hrsp_2xx": "90", "hrsp_4xx": "7",
     "hrsp_5xx": "3", "dreq": "2", "ereq": "5", "scur": "4", "conn_tot": "11", "status": "OPEN"},
    {"pxname": "hosts", "svname": "h1", "status": "UP"},
    {"pxname": "hosts", "svname": "h2", "status": "DOWN"},
    {"pxname": "hosts", "svname": "h3", "status": "UP 1/2"},
    {"pxname": "hosts", "svname": "h4", "status": "MAINT"},
    {"pxname": "hosts", "svname": "BACKEND", "wretr": "1", "wredis": "6", "qcur": "0",
     "status": "UP"},
    {"pxname": "control", "svname": "control", "status": "UP"},
]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_up_slots_are_the_hosts_servers_health_checks_pass() -> None:
    assert up_slots(ROWS) == [1, 3]


def test_ingress_page_is_prometheus_text_with_the_haproxy_counters() -> None:
    got = _samples(ingress_page(ROWS))
    assert got[("tenantry_ingress_requests_total", (("code", "2xx"),))] == 90
    assert got[("tenantry_ingress_requests_total", (("code", "5xx"),))] == 3
    assert got[("tenantry_ingress_denied_total", ())] == 2
    assert got[("tenantry_ingress_request_errors_total", ())] == 5
    assert got[("tenantry_ingress_redispatches_total", ())] == 6
    assert got[("tenantry_ingress_open_connections", ())] == 4
    assert got[("tenantry_replicas", ())] == 2


def test_two_ingresses_add_up_their_counters_but_not_the_replicas_they_share() -> None:
    page = ingress_page(ROWS)
    got = _samples(merge_metrics([page, page]))
    assert got[("tenantry_ingress_requests_total", (("code", "2xx"),))] == 180
    assert got[("tenantry_ingresses", ())] == 2
    assert got[("tenantry_replicas", ())] == 2


@pytest.mark.parametrize(("host", "keys", "anonymous", "refused"), [
    ("127.0.0.1", "", False, False),
    ("127.0.0.2", "", False, False),
    ("localhost", "", False, False),
    ("::1", "", False, False),
    ("0.0.0.0", "", False, True),
    ("auto", "", False, True),
    ("10.1.2.3", "", False, True),
    ("0.0.0.0", "keys.json", False, False),
    ("0.0.0.0", "", True, False),
])
def test_a_non_loopback_ingress_needs_keys_or_allow_anonymous(
        host: str, keys: str, anonymous: bool, refused: bool) -> None:
    problem = ServeSettings(host=host, api_keys_file=keys,
                            allow_anonymous=anonymous).exposure_problem()
    assert bool(problem) == refused
    if refused:
        assert "--allow-anonymous" in problem and host in problem
