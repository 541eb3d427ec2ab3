"""Baseline: tenantry's former asyncio router, as its own process, in front of running hosts.

    python benchmarks/baseline_router.py --port P [--address GCS_HOST:PORT] [--app-name wserve]

This is the request path tenantry used before the HAProxy ingress (commit 1980319:
``engine/serving/router.py``, ``proxy.py`` and ``hashring.py`` in one module), kept as a
baseline for ``w_serve.py``. It connects to the Ray cluster of a running ``tenantry serve``
(namespace ``tenantry``), polls the app's directory actor for the live model hosts every
0.5 s and forwards each request over pooled keep-alive connections to the host that
rendezvous hashing with bounded load picks for the tenant. Differences from the original:
it runs as a plain process (not a Serve deployment), reports no tenant heat to the
directory, and its ``/metrics`` is the hosts' pages summed (it keeps no counters of its own).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.serving.aggregate import merge_metrics
from engine.serving.directory import NAMESPACE, Endpoint, directory_name
from registry.ids import TENANT_ID_PATTERN

SYNC_INTERVAL_S = 0.5
MAX_HEAD = 64 * 1024
MAX_BODY = 32 * 1024 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 411: "Length Required",
            413: "Payload Too Large", 422: "Unprocessable Entity", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


# -- placement (was engine/serving/hashring.py) ------------------------------------------------
def _score(tenant: str, replica: str) -> int:
    digest = hashlib.blake2b(f"{tenant}\x00{replica}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_order(tenant: str, replicas: Sequence[str]) -> list[str]:
    """Replicas in the tenant's preference order (highest score first)."""
    return sorted(replicas, key=lambda r: _score(tenant, r), reverse=True)


class BoundedLoadBalancer:
    """Rendezvous order per tenant; a replica at ``ceil(c * mean)`` in flight is skipped."""

    def __init__(self, load_factor: float = 1.25, min_bound: int = 8,
                 memo_size: int = 65536) -> None:
        if load_factor < 1.0:
            raise ValueError("load_factor must be >= 1")
        self.load_factor = load_factor
        self.min_bound = min_bound  # below this in flight a replica is never "overloaded"
        self.replicas: tuple[str, ...] = ()
        self._memo: dict[str, list[str]] = {}
        self._memo_size = memo_size
        self.spills = 0

    def set_replicas(self, replicas: Sequence[str]) -> bool:
        """Set the live replica ids; True if membership changed."""
        new = tuple(sorted(replicas))
        if new == self.replicas:
            return False
        self.replicas = new
        self._memo.clear()
        return True

    def order(self, tenant: str) -> list[str]:
        """The tenant's preference order over the live replicas (memoised)."""
        order = self._memo.get(tenant)
        if order is None:
            if len(self._memo) >= self._memo_size:
                self._memo.clear()
            order = self._memo[tenant] = rendezvous_order(tenant, self.replicas)
        return order

    def choose(self, tenant: str, inflight: Mapping[str, int]) -> list[str]:
        """Replicas to try, in order: the first under the load bound, then the rest."""
        order = self.order(tenant)
        if len(order) <= 1:
            return list(order)
        total = sum(inflight.get(r, 0) for r in order)
        bound = max(self.min_bound, math.ceil(self.load_factor * (total + 1) / len(order)))
        for i, replica in enumerate(order):
            if inflight.get(replica, 0) < bound:
                if i:
                    self.spills += 1
                    return [replica] + order[:i] + order[i + 1:]
                return list(order)
        return list(order)


# -- HTTP/1.1 on asyncio streams (was engine/serving/proxy.py) ---------------------------------
@dataclass(slots=True)
class HttpRequest:
    """A parsed request: head bytes kept verbatim for forwarding."""

    method: str
    path: str
    head: bytes
    body: bytes
    headers: dict[str, str]
    keep_alive: bool


@dataclass(slots=True)
class HttpResponse:
    """A response as bytes ready to write."""

    status: int
    raw: bytes
    headers: dict[str, str] = field(default_factory=dict)


class UpstreamError(Exception):
    """The upstream failed; ``sent`` tells whether the request may have been processed."""

    def __init__(self, message: str, sent: bool, refused: bool = False) -> None:
        super().__init__(message)
        self.sent = sent
        self.refused = refused


def simple_response(status: int, body: bytes, content_type: str = "application/json",
                    extra: str = "") -> bytes:
    """A complete HTTP/1.1 response."""
    reason = _REASONS.get(status, "Status")
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(body)}\r\n{extra}\r\n").encode() + body


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


async def read_request(reader: asyncio.StreamReader) -> HttpRequest | None:
    """The next request on a client connection, or None at EOF (ValueError: malformed)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError as exc:
        raise ValueError("413 request head too large") from exc
    start, headers = _parse_head(head)
    parts = start.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError("400 malformed request line")
    if "chunked" in headers.get("transfer-encoding", ""):
        raise ValueError("411 chunked request bodies are not supported; send content-length")
    length = int(headers.get("content-length", "0") or 0)
    if length > MAX_BODY:
        raise ValueError("413 request body too large")
    body = await reader.readexactly(length) if length else b""
    keep_alive = headers.get("connection", "").lower() != "close" and parts[2] == "HTTP/1.1"
    return HttpRequest(parts[0], parts[1].split("?", 1)[0], head, body, headers, keep_alive)


class UpstreamPool:
    """Keep-alive connections to one upstream ``host:port``."""

    def __init__(self, host: str, port: int, timeout_s: float = 30.0) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.inflight = 0

    async def request(self, head: bytes, body: bytes) -> HttpResponse:
        """Send one request and read the whole response (UpstreamError on failure)."""
        try:
            return await self._request(head, body, self._pop_idle())
        except UpstreamError as exc:
            if exc.sent or exc.refused:
                raise
        # A pooled connection the upstream had closed: the request never reached it.
        return await self._request(head, body, None)

    def _pop_idle(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        while self._idle:
            reader, writer = self._idle.pop()
            if not (reader.at_eof() or writer.is_closing()):
                return reader, writer
            writer.close()
        return None

    async def _request(self, head: bytes, body: bytes,
                       pooled: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
                       ) -> HttpResponse:
        reused = pooled is not None
        try:
            reader, writer = pooled if pooled is not None else \
                await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD)
        except OSError as exc:
            raise UpstreamError(f"connect {self.host}:{self.port}: {exc}", sent=False,
                                refused=True) from exc
        self.inflight += 1
        try:
            writer.write(head + body)
            resp = await asyncio.wait_for(self._read_response(reader), self.timeout_s)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            writer.close()
            raise UpstreamError(f"{self.host}:{self.port}: {exc!r}",
                                sent=not (reused and isinstance(
                                    exc, (asyncio.IncompleteReadError, ConnectionError)))) \
                from exc
        except TimeoutError as exc:
            writer.close()
            raise UpstreamError(f"{self.host}:{self.port}: timed out", sent=True) from exc
        finally:
            self.inflight -= 1
        if resp.headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            self._idle.append((reader, writer))
        return resp

    @staticmethod
    async def _read_response(reader: asyncio.StreamReader) -> HttpResponse:
        head = await reader.readuntil(b"\r\n\r\n")
        start, headers = _parse_head(head)
        status = int(start.split(" ", 2)[1])
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
            return HttpResponse(status, head + body, headers)
        if "chunked" in headers.get("transfer-encoding", ""):
            chunks = []
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                data = await reader.readexactly(size + 2)
                chunks.append(size_line + data)
                if size == 0:
                    break
            return HttpResponse(status, head + b"".join(chunks), headers)
        body = await reader.read()  # close-delimited
        headers["connection"] = "close"
        return HttpResponse(status, head + body, headers)

    def close(self) -> None:
        """Close idle connections."""
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


Handler = Callable[[HttpRequest], Awaitable[bytes]]


async def serve_http(handler: Handler, host: str, port: int) -> asyncio.AbstractServer:
    """Start an HTTP/1.1 server calling ``handler`` for each request (keep-alive)."""

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    req = await read_request(reader)
                except ValueError as exc:
                    code, _, msg = str(exc).partition(" ")
                    writer.write(simple_response(int(code), f'{{"detail": "{msg}"}}'.encode(),
                                                 extra="connection: close\r\n"))
                    await writer.drain()
                    break
                if req is None:
                    break
                writer.write(await handler(req))
                await writer.drain()
                if not req.keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(on_client, host, port, limit=MAX_HEAD, backlog=4096)


# -- the router (was engine/serving/router.py) -------------------------------------------------
def _error(status: int, kind: str, detail: str) -> bytes:
    return simple_response(status, json.dumps({"error": kind, "detail": detail}).encode())


class RouterCore:
    """Routing state and the request handler; Ray only via the directory actor."""

    def __init__(self, directory: Any, load_factor: float = 1.25,
                 replica_ttl_s: float = 5.0) -> None:
        self.directory = directory
        self.replica_ttl_s = replica_ttl_s
        self.balancer = BoundedLoadBalancer(load_factor)
        self.pools: dict[str, UpstreamPool] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._rr = 0
        self._listed_at: dict[str, float] = {}
        self._unreachable: dict[str, float] = {}
        self.sync_errors = 0

    # -- membership ---------------------------------------------------------------------
    def set_endpoints(self, endpoints: list[Endpoint]) -> None:
        """Take the directory's live set; an unlisted replica stays a few TTLs unless it
        refused a connection (survivors' heartbeats can stall while a node dies)."""
        now = time.monotonic()
        new = {ep.replica_id: ep for ep in endpoints
               if now - self._unreachable.get(ep.replica_id, -1e9) > self.replica_ttl_s}
        for rid in new:
            self._listed_at[rid] = now
        horizon = 4 * self.replica_ttl_s
        for rid, ep in self.endpoints.items():
            if rid not in new and rid not in self._unreachable and \
                    now - self._listed_at.get(rid, now) < horizon:
                new[rid] = ep
        self._listed_at = {r: t for r, t in self._listed_at.items()
                           if r in new or now - t < horizon}
        self._unreachable = {r: t for r, t in self._unreachable.items()
                             if now - t <= self.replica_ttl_s}
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

    async def sync_once(self) -> None:
        """Pull the live endpoints from the directory."""
        self.set_endpoints(list(await self.directory.live.remote()))

    async def _sync_loop(self) -> None:
        while True:
            try:
                await self.sync_once()
            except Exception:  # noqa: BLE001 - keep routing with what we have
                self.sync_errors += 1
            await asyncio.sleep(SYNC_INTERVAL_S)

    def start_background(self) -> None:
        """Start directory sync on the running loop."""
        self._tasks.append(asyncio.get_running_loop().create_task(self._sync_loop()))

    # -- requests -----------------------------------------------------------------------
    async def handle(self, req: HttpRequest) -> bytes:
        """Answer one request (the router's only entry point)."""
        path = req.path
        if path.startswith("/v1/tenants/"):
            tenant = path.split("/", 4)[3]
            if TENANT_ID_PATTERN.fullmatch(tenant) is None:
                return _error(422, "InvalidTenantId",
                              f"invalid tenant id {tenant[:70]!r}: expected 1-64 characters of "
                              "letters, digits, '.', '_' or '-', starting with a letter or digit")
            inflight = {rid: pool.inflight for rid, pool in self.pools.items()}
            order = self.balancer.choose(tenant, inflight)
        elif path == "/healthz":
            return simple_response(200, b'{"status": "ok"}')
        elif path == "/readyz":
            ok = bool(self.pools)
            body = json.dumps({"ready": ok, "replicas": len(self.pools)}).encode()
            return simple_response(200 if ok else 503, body)
        elif path == "/metrics":
            return simple_response(200, (await self.metrics_text()).encode(),
                                   "text/plain; version=0.0.4; charset=utf-8")
        else:
            order = list(self.balancer.replicas)
            if order:
                self._rr = (self._rr + 1) % len(order)
                order = order[self._rr:] + order[:self._rr]
        return await self._forward(req, order)

    async def _forward(self, req: HttpRequest, order: list[str]) -> bytes:
        for rid in order[:3]:
            pool = self.pools.get(rid)
            if pool is None:
                continue
            try:
                resp = await pool.request(req.head, req.body)
            except UpstreamError as exc:
                if exc.sent:
                    return _error(502, "ReplicaUnavailable",
                                  f"model host failed mid-request: {exc}")
                if exc.refused:
                    self.mark_unreachable(rid)
                continue  # never reached the replica: the next one in order takes it
            return resp.raw
        return _error(503, "ReplicaUnavailable", "no model-host replica is reachable")

    async def metrics_text(self) -> str:
        """Every replica's metrics, summed."""
        request = b"GET /metrics HTTP/1.1\r\nhost: tenantry\r\n\r\n"

        async def scrape(pool: UpstreamPool) -> str:
            try:
                resp = await asyncio.wait_for(pool.request(request, b""), 5.0)
            except (TimeoutError, UpstreamError):
                return ""
            return resp.raw.split(b"\r\n\r\n", 1)[1].decode()

        pages = await asyncio.gather(*(scrape(p) for p in list(self.pools.values())))
        return merge_metrics(list(pages))

    async def close(self) -> None:
        """Stop background tasks and close pooled connections."""
        for task in self._tasks:
            task.cancel()
        for pool in self.pools.values():
            pool.close()


# -- process ---------------------------------------------------------------------------------
def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # the original ran on uvloop (uvicorn[standard] ships it)

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()


def _find_directory(app_name: str, timeout_s: float) -> Any:
    import ray

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ray.get_actor(directory_name(app_name), namespace=NAMESPACE)
        except ValueError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--address", default="auto", help="Ray GCS address of the serving app")
    parser.add_argument("--app-name", default="wserve")
    parser.add_argument("--load-factor", type=float, default=1.25)
    parser.add_argument("--replica-ttl", type=float, default=5.0)
    args = parser.parse_args(argv)

    import ray

    init: dict[str, Any] = {"address": args.address, "namespace": NAMESPACE,
                            "log_to_driver": False}
    if args.address.startswith("127."):  # a private loopback cluster (tenantry serve)
        init["_node_ip_address"] = args.address.rsplit(":", 1)[0]
    ray.init(**init)
    core = RouterCore(_find_directory(args.app_name, 60.0), args.load_factor,
                      args.replica_ttl)
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)

    async def start() -> asyncio.AbstractServer:
        server = await serve_http(core.handle, args.host, args.port)
        await core.sync_once()
        core.start_background()
        return server

    server = loop.run_until_complete(start())
    try:
        loop.run_forever()
    finally:
        server.close()
        loop.run_until_complete(core.close())
        loop.close()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
