"""/metrics totals never go down when replicas die, restart or scale (CarriedCounters and
the ingress control app that uses it)."""

from __future__ import annotations

import asyncio
import http.server
import random
import threading
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.ingress.control import ControlSources, create_control_app
from engine.ingress.runtime import RuntimeError_, StatRow
from engine.metrics import Metrics
from engine.serving.aggregate import CarriedCounters
from engine.serving.directory import Endpoint

REQS = ("tenantry_requests_total", (("code", "200"), ("route", "predict")))
HITS = ("tenantry_cache_hits_total", ())
LOAD_COUNT = ("tenantry_model_load_seconds_count", ())
LOAD_BUCKET = ("tenantry_model_load_seconds_bucket", (("le", "0.002"),))
CACHE_BYTES = ("tenantry_cache_bytes", ())


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def replica(requests: int, hits: int = 0, loads: int = 0, nbytes: int = 0) -> Metrics:
    m = Metrics()
    if requests:
        m.requests.labels("predict", "200").inc(requests)
    m.cache_hits.inc(hits)
    for _ in range(loads):
        m.model_load_seconds.observe(0.001)
    m.cache_bytes.set(nbytes)
    return m


def page(m: Metrics) -> str:
    return m.render().decode()


def test_a_replica_that_disappears_keeps_its_counts_but_not_its_gauges() -> None:
    carry = CarriedCounters()
    a, b = replica(5, 3, 2, nbytes=100), replica(7, 4, 1, nbytes=50)
    first = samples(carry.merge({"a": page(a), "b": page(b)}))
    assert first[REQS] == 12 and first[HITS] == 7 and first[LOAD_COUNT] == 3
    assert first[LOAD_BUCKET] == 3 and first[CACHE_BYTES] == 150
    after = samples(carry.merge({"a": page(a)}))  # b died
    for key in (REQS, HITS, LOAD_COUNT, LOAD_BUCKET):
        assert after[key] == first[key]
    assert after[CACHE_BYTES] == 100  # gauges are not carried
    a.requests.labels("predict", "200").inc()
    assert samples(carry.merge({"a": page(a)}))[REQS] == 13


def test_a_replacement_starting_from_zero_keeps_totals_growing() -> None:
    carry = CarriedCounters()
    a, b = replica(5, 3), replica(7, 4)
    carry.merge({"a": page(a), "b": page(b)})
    fresh = replica(1, 1)  # b's replacement: a new id, counting from 0
    got = samples(carry.merge({"a": page(a), "c": page(fresh)}))
    assert got[REQS] == 13 and got[HITS] == 8
    fresh.requests.labels("predict", "200").inc(2)
    assert samples(carry.merge({"a": page(a), "c": page(fresh)}))[REQS] == 15


def test_a_source_whose_counters_go_down_restarted() -> None:
    carry = CarriedCounters()
    carry.merge({"ingress": page(replica(10, 2))})
    got = samples(carry.merge({"ingress": page(replica(1, 0))}))  # same id, from 0
    assert got[REQS] == 11 and got[HITS] == 2
    # a series the restarted process has not created yet also tells of a restart
    carry = CarriedCounters()
    carry.merge({"x": page(replica(4))})
    assert samples(carry.merge({"x": page(replica(0, 1))}))[REQS] == 4


def test_a_failed_scrape_counts_the_last_values_and_a_return_is_not_counted_twice() -> None:
    carry = CarriedCounters()
    a, b = replica(5), replica(7)
    carry.merge({"a": page(a), "b": page(b)})
    assert samples(carry.merge({"a": page(a), "b": ""}))[REQS] == 12  # b timed out
    assert samples(carry.merge({"a": page(a)}))[REQS] == 12  # directory dropped b
    b.requests.labels("predict", "200").inc(3)
    assert samples(carry.merge({"a": page(a), "b": page(b)}))[REQS] == 15  # b is back


def test_retired_sources_are_bounded_and_folded() -> None:
    carry = CarriedCounters(retired_limit=2)
    total = 0
    for i in range(10):
        carry.merge({f"r{i}": page(replica(i + 1))})
        total += i + 1
    assert len(carry._retired) == 2
    assert samples(carry.merge({}))[REQS] == total


@pytest.mark.parametrize("restarts", [False, True])
def test_random_replica_churn_never_lowers_a_counter(restarts: bool) -> None:
    """Replicas come, go, (restart under the same id,) and fail scrapes at random. Counters
    never go down; without same-id restarts the total is exactly what was ever scraped
    (counts a replica made after its last successful scrape die with it)."""
    rng = random.Random(7)
    carry = CarriedCounters(retired_limit=3)
    live: dict[str, Metrics] = {}
    scraped: dict[str, float] = {}  # each live replica's requests as last scraped
    gone = 0.0  # what dead replicas had shown
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for step in range(120):
        action = rng.random()
        if action < 0.1 or not live:
            live[f"r{step}"] = Metrics()
        elif action < 0.2:
            rid = rng.choice(sorted(live))
            live.pop(rid)
            gone += scraped.pop(rid, 0.0)
        elif action < 0.25 and restarts:
            live[rng.choice(sorted(live))] = Metrics()
        for m in live.values():
            m.requests.labels("predict", "200").inc(rng.randrange(3))
            m.model_load_seconds.observe(rng.random() / 100)
        pages = {rid: ("" if rng.random() < 0.05 else page(m)) for rid, m in live.items()}
        scraped.update((rid, samples(text).get(REQS, 0.0))
                       for rid, text in pages.items() if text)
        got = samples(carry.merge(pages))
        for key, value in got.items():
            if key[0].endswith(("_total", "_bucket", "_count", "_sum")):
                assert value >= seen.get(key, 0.0) - 1e-9, (step, key)
                seen[key] = value
    final = samples(carry.merge({rid: page(m) for rid, m in live.items()}))[REQS]
    if not restarts:
        assert final == gone + sum(samples(page(m)).get(REQS, 0.0) for m in live.values())


# -- through the ingress control app ---------------------------------------------------------

class _Page(http.server.BaseHTTPRequestHandler):
    metrics: Metrics

    def do_GET(self) -> None:
        body = self.metrics.render()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def replica_servers() -> Iterator[list[tuple[Endpoint, Metrics]]]:
    servers, out = [], []
    for i in range(2):
        m = replica(10 * (i + 1), hits=i + 1)
        handler = type(f"Page{i}", (_Page,), {"metrics": m})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        out.append((Endpoint(f"rep{i}", "127.0.0.1", server.server_address[1], 0.0), m))
    yield out
    for server in servers:
        server.shutdown()
        server.server_close()


def test_control_app_totals_survive_a_replica_leaving(
        replica_servers: list[tuple[Endpoint, Metrics]]) -> None:
    live = [ep for ep, _ in replica_servers]

    def stats() -> list[StatRow]:
        raise RuntimeError_("no HAProxy in this test")

    async def endpoints() -> list[Endpoint]:
        return list(live)

    async def no_others() -> list[str]:
        return []

    app = create_control_app(ControlSources(stats, endpoints, no_others))

    async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ctl") as client:
            return samples((await client.get("/metrics")).text)

    async def main() -> None:
        before = await scrape()
        assert before[REQS] == 30 and before[HITS] == 3
        live.pop(0)  # replica 0 died: the directory no longer lists it
        after = await scrape()
        assert after[REQS] == 30 and after[HITS] == 3
        replica_servers[1][1].requests.labels("predict", "200").inc(5)
        assert (await scrape())[REQS] == 35

    asyncio.run(main())
