"""Console benchmark: the tenants page over HTTP with 10,000 tenants (budget 300 ms a page).

One command::

    .venv/bin/python benchmarks/console_bench.py [--tenants 10000] [--nights 2] [--repeat 20]
        [--out FILE.json]

1. Publishes ``--tenants`` synthetic tenants straight into a fresh registry (index rows
   through ``Registry.publish``, one run per night, each moving production; no artifact
   files -- the console never reads them). 2. Builds the console as ``tenantry console``
   does (snapshot load + index build, timed). 3. Serves it with uvicorn on loopback and
   times whole HTTP requests for tenants pages (first, middle and last page, a search,
   each sort key cold and warm, 200 per page) with httpx. 4. Times the incremental refresh
   after a run that touches 1% of tenants, and one tenant page (which reads Delta).
Exits 1 if any tenants page took 300 ms or more.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from engine.console import ConsoleSettings, build_console, create_app
from engine.console.index import SORT_KEYS
from registry import AliasMove, NewVersion, Registry, StagedArtifact

BUDGET_MS = 300.0


def publish_direct(reg: Registry, tenants: list[str], run_id: str, version: int,
                   date: str) -> None:
    """One version per tenant as index rows (no artifact files), production moved to it."""
    staged = []
    for t in tenants:
        shard = reg.shard_of(t)
        uri = reg.store.uri(f"artifacts/shard={shard:02d}/tenant={t}/v={version}/model.ubj")
        staged.append(StagedArtifact(t, shard, version, uri, "0" * 64, 20_000, run_id))
    versions = [NewVersion(s, ("f0", "f1"), {
        "auc": 0.6 + zlib.crc32(f"{s.tenant_id}/{version}".encode()) % 300 / 1000,
        "logloss": 0.4, "n_train": 1000}, data_date=date) for s in staged]
    reg.publish(run_id, versions, [AliasMove(s.tenant_id, "production", version, "gate")
                                   for s in staged], run_record={"date": date})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 2)


def time_get(client: httpx.Client, url: str, repeat: int) -> dict[str, Any]:
    """Wall time of ``repeat`` GETs of ``url`` (the first one reported apart)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        resp = client.get(url)
        times.append(time.perf_counter() - t0)
        resp.raise_for_status()
    return {"url": url, "first_ms": _ms(times[0]), "p50_ms": _ms(statistics.median(times)),
            "max_ms": _ms(max(times)), "bytes": len(resp.content)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark; returns its JSON document."""
    work = Path(tempfile.mkdtemp(prefix="console-bench-"))
    reg = Registry.create(str(work / "registry"), num_shards=16)
    tenants = [f"tenant-{i:05d}" for i in range(args.tenants)]
    t0 = time.perf_counter()
    for night in range(args.nights):
        publish_direct(reg, tenants, f"night-{night}", night + 1, f"2026-11-{night + 1:02d}")
    publish_s = time.perf_counter() - t0

    settings = ConsoleSettings(registry=reg.root, port=_free_port(), refresh_s=1.0)
    t0 = time.perf_counter()
    console = build_console(settings)
    cold_s = time.perf_counter() - t0
    server = uvicorn.Server(uvicorn.Config(create_app(settings, console), host="127.0.0.1",
                                           port=settings.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{settings.port}"
    pages: list[dict[str, Any]] = []
    try:
        with httpx.Client(base_url=base, timeout=30.0) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("console did not start")
                time.sleep(0.05)
            last = -(-args.tenants // settings.page_size)
            urls = ["/tenants", f"/tenants?page={last // 2}", f"/tenants?page={last}",
                    "/tenants?q=tenant-0042", "/tenants?q=99&page=2",
                    "/tenants?per_page=200&page=3"]
            urls += [f"/tenants?sort={k}&desc=1&page=7" for k in SORT_KEYS]
            pages = [time_get(client, u, args.repeat) for u in urls]
            touched = tenants[:: 100]
            publish_direct(reg, touched, "night-extra", args.nights + 1, "2026-12-31")
            t0 = time.perf_counter()
            console.index.refresh()
            refresh_s = time.perf_counter() - t0
            after = time_get(client, "/tenants?sort=latest&desc=1", args.repeat)
            tenant_page = time_get(client, f"/tenants/{tenants[0]}", 3)
    finally:
        server.should_exit = True
        thread.join(10)
    worst = max(p["max_ms"] for p in [*pages, after])
    return {
        "benchmark": "console tenants page", "tenants": args.tenants, "nights": args.nights,
        "index_rows": args.tenants * args.nights, "repeat": args.repeat,
        "publish_s": round(publish_s, 2), "cold_load_s": round(cold_s, 3),
        "index_build_ms": _ms(console.index.view.build_seconds),
        "refresh_after_1pct_run_ms": _ms(refresh_s), "pages": pages,
        "after_refresh": after, "tenant_page": tenant_page, "worst_tenants_page_ms": worst,
        "budget_ms": BUDGET_MS, "within_budget": worst < BUDGET_MS,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }


def main() -> int:
    """Run and print the document (and write it with ``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--nights", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", default=None, help="also write the JSON document here")
    args = parser.parse_args()
    doc = run(args)
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(f"worst tenants page {doc['worst_tenants_page_ms']} ms over {args.tenants} tenants "
          f"(budget {BUDGET_MS:.0f} ms): {'PASS' if doc['within_budget'] else 'FAIL'}",
          file=sys.stderr)
    return 0 if doc["within_budget"] else 1


if __name__ == "__main__":
    sys.exit(main())
