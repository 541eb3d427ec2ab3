"""The router: one HTTP entry point that keeps each tenant on the replica holding it.

It answers /healthz, /readyz and /metrics itself (metrics summed over every replica),
refuses invalid tenant ids before any hop, and forwards the rest over pooled keep-alive
connections to the model host chosen by :class:`BoundedLoadBalancer`. A replica that
cannot be reached is skipped for the next in the tenant's order, so only requests a dying
replica had already accepted can fail.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any, Protocol

from engine.metrics import Metrics
from engine.serving.aggregate import merge_metrics
from engine.serving.api import route_label
from engine.serving.directory import Endpoint
from engine.serving.hashring import BoundedLoadBalancer
from engine.serving.proxy import HttpRequest, UpstreamError, UpstreamPool, simple_response
from engine.settings import ServeSettings
from registry.ids import TENANT_ID_PATTERN

__all__ = ["RouterCore", "DirectoryClient", "RayDirectoryClient"]

SYNC_INTERVAL_S = 0.5
HEAT_INTERVAL_S = 10.0


class DirectoryClient(Protocol):
    """What the router needs from the directory."""

    async def live(self) -> list[Endpoint]:
        """Endpoints of the replicas alive now."""

    async def report_heat(self, counts: dict[str, int]) -> None:
        """Per-tenant request counts since the last report."""


class RayDirectoryClient:
    """:class:`DirectoryClient` over the directory Ray actor."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    async def live(self) -> list[Endpoint]:
        return list(await self.actor.live.remote())

    async def report_heat(self, counts: dict[str, int]) -> None:
        await self.actor.report_heat.remote(counts)


def _error(status: int, kind: str, detail: str) -> bytes:
    return simple_response(status, json.dumps({"error": kind, "detail": detail}).encode())


class RouterCore:
    """Routing state and the request handler (plain asyncio; Ray only via the directory)."""

    def __init__(self, settings: ServeSettings, directory: DirectoryClient,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.directory = directory
        self.metrics = metrics or Metrics()
        self.balancer = BoundedLoadBalancer(settings.load_factor)
        self.pools: dict[str, UpstreamPool] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.heat: Counter[str] = Counter()
        self._tasks: list[asyncio.Task[None]] = []
        self._rr = 0
        self._listed_at: dict[str, float] = {}  # last time the directory listed a replica
        self._unreachable: dict[str, float] = {}  # replica -> when it refused a connection

    # -- membership ---------------------------------------------------------------------
    def set_endpoints(self, endpoints: list[Endpoint]) -> None:
        """Take the directory's live replica set (pools of departed replicas are closed).

        A replica the directory stops listing (missed heartbeats) stays routable for a few
        TTLs unless it has refused a connection: when a node dies, the survivors'
        heartbeats can stall for seconds while Ray sorts the failure out, and dropping them
        would leave no replica to route to. A dead replica refuses at once and is dropped
        by :meth:`mark_unreachable` on its first refused request.
        """
        now = time.monotonic()
        new = {ep.replica_id: ep for ep in endpoints
               if now - self._unreachable.get(ep.replica_id, -1e9) > self.settings.replica_ttl_s}
        for rid in new:
            self._listed_at[rid] = now
        horizon = 4 * self.settings.replica_ttl_s
        for rid, ep in self.endpoints.items():
            if rid not in new and rid not in self._unreachable and \
                    now - self._listed_at.get(rid, now) < horizon:
                new[rid] = ep
        # Forget replicas long gone, so that churn (restarts, scaling) does not grow these.
        self._listed_at = {r: t for r, t in self._listed_at.items()
                           if r in new or now - t < horizon}
        self._unreachable = {r: t for r, t in self._unreachable.items()
                             if now - t <= self.settings.replica_ttl_s}
        self._install(new)

    def mark_unreachable(self, replica_id: str) -> None:
        """Stop routing to a replica that refused a connection (until listed afresh)."""
        self._unreachable[replica_id] = time.monotonic()
        if replica_id in self.endpoints:
            self._install({r: ep for r, ep in self.endpoints.items() if r != replica_id})

    def _install(self, new: dict[str, Endpoint]) -> None:
        for rid, pool in list(self.pools.items()):
            ep = new.get(rid)
            if ep is None or (ep.host, ep.port) != (pool.host, pool.port):
                pool.close()
                del self.pools[rid]
        for rid, ep in new.items():
            if rid not in self.pools:
                self.pools[rid] = UpstreamPool(ep.host, ep.port)
        self.endpoints = new
        self.balancer.set_replicas(list(new))
        self.metrics.replicas.set(len(new))

    async def sync_once(self) -> None:
        """Pull the live endpoints from the directory."""
        self.set_endpoints(await self.directory.live())

    async def _sync_loop(self) -> None:
        last_heat = time.monotonic()
        while True:
            try:
                await self.sync_once()
                if time.monotonic() - last_heat > HEAT_INTERVAL_S and self.heat:
                    counts, self.heat = dict(self.heat.most_common(5000)), Counter()
                    await self.directory.report_heat(counts)
                    last_heat = time.monotonic()
            except Exception:  # noqa: BLE001 - keep routing with what we have
                pass
            await asyncio.sleep(SYNC_INTERVAL_S)

    def start_background(self) -> None:
        """Start directory sync on the running loop."""
        self._tasks.append(asyncio.get_running_loop().create_task(self._sync_loop()))

    # -- requests -----------------------------------------------------------------------
    def _own(self, req: HttpRequest, status: int, raw: bytes, started: float) -> bytes:
        route = route_label(req.path)
        self.metrics.requests.labels(route, str(status)).inc()
        self.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
        return raw

    async def handle(self, req: HttpRequest) -> bytes:
        """Answer one request (the router's only entry point)."""
        started = time.perf_counter()
        path = req.path
        if path.startswith("/v1/tenants/"):
            tenant = path.split("/", 4)[3]
            if TENANT_ID_PATTERN.fullmatch(tenant) is None:
                return self._own(req, 422, _error(
                    422, "InvalidTenantId",
                    f"invalid tenant id {tenant[:70]!r}: expected 1-64 characters of letters, "
                    "digits, '.', '_' or '-', starting with a letter or digit"), started)
            self.heat[tenant] += 1
            inflight = {rid: pool.inflight for rid, pool in self.pools.items()}
            order = self.balancer.choose(tenant, inflight)
        elif path == "/healthz":
            return self._own(req, 200, simple_response(200, b'{"status": "ok"}'), started)
        elif path == "/readyz":
            ok = bool(self.pools)
            body = json.dumps({"ready": ok, "replicas": len(self.pools)}).encode()
            return self._own(req, 200 if ok else 503, simple_response(200 if ok else 503, body),
                             started)
        elif path == "/metrics":
            return self._own(req, 200, simple_response(
                200, (await self.metrics_text()).encode(),
                "text/plain; version=0.0.4; charset=utf-8"), started)
        else:
            order = list(self.balancer.replicas)
            if order:
                self._rr = (self._rr + 1) % len(order)
                order = order[self._rr:] + order[:self._rr]
        return await self._forward(req, order, started)

    async def _forward(self, req: HttpRequest, order: list[str], started: float) -> bytes:
        for rid in order[:3]:
            pool = self.pools.get(rid)
            if pool is None:
                continue
            try:
                resp = await pool.request(req.head, req.body)
            except UpstreamError as exc:
                if exc.sent:
                    return self._own(req, 502, _error(
                        502, "ReplicaUnavailable", f"model host failed mid-request: {exc}"),
                        started)
                if exc.refused:
                    self.mark_unreachable(rid)
                continue  # never reached the replica: the next one in order takes it
            return resp.raw
        return self._own(req, 503, _error(503, "ReplicaUnavailable",
                                          "no model-host replica is reachable"), started)

    async def metrics_text(self) -> str:
        """This router's metrics plus every replica's, summed."""
        request = b"GET /metrics HTTP/1.1\r\nhost: tenantry\r\n\r\n"

        async def scrape(pool: UpstreamPool) -> str:
            try:
                resp = await asyncio.wait_for(pool.request(request, b""), 5.0)
            except (UpstreamError, asyncio.TimeoutError):
                return ""
            return resp.raw.split(b"\r\n\r\n", 1)[1].decode()

        pages = await asyncio.gather(*(scrape(p) for p in list(self.pools.values())))
        return merge_metrics([self.metrics.render().decode(), *pages])

    async def close(self) -> None:
        """Stop background tasks and close pooled connections."""
        for task in self._tasks:
            task.cancel()
        for pool in self.pools.values():
            pool.close()
