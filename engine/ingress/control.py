"""The ingress's control app: ``/readyz`` and ``/metrics`` for one node, behind HAProxy.

HAProxy sends those two paths here (a loopback port of the ingress actor). ``/readyz`` is
200 only when HAProxy has a model host whose own ``/readyz`` health check passes (its
registry snapshot is loaded), i.e. when a predict would be served. ``/metrics`` is one
scrape for the whole app: every ingress's HAProxy counters and every model host's page,
merged (counters and histograms summed). Its counters never go down while this ingress
lives: the last values of a replica that died or restarted, and of this ingress's HAProxy
before a restart, stay in the totals (:class:`~engine.serving.aggregate.CarriedCounters`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.ingress.runtime import RuntimeError_, StatRow
from engine.ingress.stats import ingress_page, up_slots
from engine.serving.aggregate import CarriedCounters
from engine.serving.directory import Endpoint

__all__ = ["ControlSources", "create_control_app"]

SCRAPE_TIMEOUT_S = 5.0
READYZ_HOST_TIMEOUT_S = 1.0  # /readyz asks each host for its snapshot's age this long
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
OWN_SOURCE = "ingress"  # this ingress's HAProxy counters, among the replicas' pages


class ControlSources:
    """Where the control app reads from (injected, so tests pass plain functions)."""

    def __init__(self, stats: Callable[[], list[StatRow]],
                 endpoints: Callable[[], Awaitable[list[Endpoint]]],
                 other_ingress_pages: Callable[[], Awaitable[list[str]]]) -> None:
        self.stats = stats
        self.endpoints = endpoints
        self.other_ingress_pages = other_ingress_pages


async def _replica_pages(client: httpx.AsyncClient, endpoints: list[Endpoint]) -> list[str]:
    async def one(ep: Endpoint) -> str:
        try:
            resp = await client.get(f"http://{ep.address}/metrics")
        except httpx.HTTPError:
            return ""
        return resp.text if resp.status_code == 200 else ""

    return list(await asyncio.gather(*(one(ep) for ep in endpoints)))


async def _host_freshness(client: httpx.AsyncClient, sources: ControlSources
                          ) -> dict[str, Any]:
    """Whether a host serves a registry snapshot it could not refresh for a while
    (``stale``), and the oldest snapshot's age, from the hosts' own /readyz."""

    async def freshness(ep: Endpoint) -> dict[str, Any]:
        try:
            doc = (await client.get(f"http://{ep.address}/readyz",
                                    timeout=READYZ_HOST_TIMEOUT_S)).json()
        except (httpx.HTTPError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    try:
        endpoints = await asyncio.wait_for(sources.endpoints(), READYZ_HOST_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - directory restarting: freshness unknown
        endpoints = []
    docs = await asyncio.gather(*(freshness(ep) for ep in endpoints))
    ages = [d["snapshot_age_s"] for d in docs if d.get("snapshot_age_s") is not None]
    return {"stale": any(d.get("stale") for d in docs),
            "snapshot_age_s": max(ages) if ages else None}


def create_control_app(sources: ControlSources) -> Any:
    """The control app over ``sources``."""
    app = FastAPI(title="tenantry ingress control", docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """404/405 in tenantry's error shape (a 405 says ``Allow: GET, HEAD``)."""
        detail = f"{request.method} {request.url.path}: {exc.detail}"
        headers = dict(exc.headers or {})
        if headers.get("Allow") == "GET":
            headers["Allow"] = "GET, HEAD"  # _HeadAsGet answers HEAD
        return JSONResponse({"error": HTTPStatus(exc.status_code).phrase.replace(" ", ""),
                             "detail": detail}, status_code=exc.status_code, headers=headers)
    client = httpx.AsyncClient(timeout=SCRAPE_TIMEOUT_S)
    carried = CarriedCounters()
    # One scrape at a time: pages merged out of order would look like counter resets.
    scraping = asyncio.Lock()

    async def rows() -> list[StatRow] | None:
        try:
            return await asyncio.to_thread(sources.stats)
        except RuntimeError_:
            return None

    @app.get("/readyz")
    async def readyz() -> Response:
        """200 when a predict would be served; ``stale`` when a host serves a registry
        snapshot it could not refresh for a while (``snapshot_age_s``: the oldest)."""
        stat = await rows()
        up = len(up_slots(stat or []))
        ok = up > 0
        return JSONResponse({"ready": ok, "replicas": up, "ingress": stat is not None,
                             **await _host_freshness(client, sources)},
                            status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        async with scraping:
            stat = await rows()
            own = ingress_page(stat) if stat is not None else ""  # "": its last values count
            try:
                endpoints = await asyncio.wait_for(sources.endpoints(), SCRAPE_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - directory restarting: the ingress's own page
                endpoints = []
            others, replicas = await asyncio.gather(sources.other_ingress_pages(),
                                                    _replica_pages(client, endpoints))
            pages = {OWN_SOURCE: own}
            pages.update((f"replica:{ep.replica_id}", page)
                         for ep, page in zip(endpoints, replicas, strict=True))
            text = carried.merge(pages, others)
        return Response(text, media_type=PROMETHEUS_TEXT)

    return _HeadAsGet(app)


class _HeadAsGet:
    """Answers ``HEAD`` like ``GET`` (RFC 9110), as the model hosts do; the server sends no
    body. Other methods the routes do not take answer 405."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send)
