"""/metrics counters never go down while a model-host replica is killed and replaced under
traffic (the ingress control app carries the dead replica's last values)."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_for

from .conftest import FEATURES

Series = tuple[str, tuple[tuple[str, str], ...]]
CUMULATIVE_SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def counters(text: str) -> dict[Series, float]:
    """The cumulative samples of a /metrics page (counters and histogram parts)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples
            if fam.type in ("counter", "histogram") and s.name.endswith(CUMULATIVE_SUFFIXES)}


def replicas(url: str) -> int:
    return int(httpx.get(f"{url}/readyz", timeout=10).json().get("replicas", 0))


def predicted(page: dict[Series, float]) -> float:
    return sum(v for (name, labels), v in page.items()
               if name == "tenantry_requests_total" and ("route", "predict") in labels)


def test_counters_never_go_down_when_a_replica_dies(serving: Any) -> None:
    import ray

    actors = [a for a in ray.util.list_named_actors(all_namespaces=True)
              if "ModelHost" in a["name"] and "itest" in a["name"]]
    assert len(actors) == 2
    victim = ray.get_actor(actors[0]["name"], namespace=actors[0]["namespace"])
    stop = threading.Event()
    sent = [0]

    def traffic() -> None:
        row = {"instances": [[0.5] * len(FEATURES)]}
        with httpx.Client(base_url=serving.url, timeout=30) as client:
            while not stop.is_set() and sent[0] < 5000:
                client.post(f"/v1/tenants/t{sent[0] % 12:02d}/predict", json=row)
                sent[0] += 1
                time.sleep(0.01)

    pages: list[dict[Series, float]] = []

    def scrape() -> None:
        with httpx.Client(base_url=serving.url, timeout=30) as client:
            while not stop.is_set():
                resp = client.get("/metrics")
                if resp.status_code == 200:
                    pages.append(counters(resp.text))
                time.sleep(0.2)

    workers = [threading.Thread(target=traffic), threading.Thread(target=scrape)]
    for worker in workers:
        worker.start()
    try:
        wait_for(lambda: len(pages) >= 5 and predicted(pages[-1]) > 50, timeout=60)
        before_kill = predicted(pages[-1])
        ray.kill(victim, no_restart=False)
        # The ingress drops the dead replica, then routes to its replacement (Serve starts
        # it, the directory gives it the slot).
        wait_for(lambda: replicas(serving.url) == 1, timeout=60, every=0.1)
        wait_for(lambda: replicas(serving.url) == 2, timeout=120, every=0.5)
        mark = len(pages)
        wait_for(lambda: len(pages) >= mark + 10, timeout=60)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    drops = []
    for earlier, later in itertools.pairwise(pages):
        drops += [(series, earlier[series], later.get(series)) for series in earlier
                  if later.get(series, 0.0) < earlier[series]]
    assert not drops, f"counters went down: {drops[:5]}"
    assert predicted(pages[-1]) > before_kill
    # Only requests counted after the dead replica's last scrape can be missing.
    assert predicted(pages[-1]) >= sent[0] * 0.9 - 50
