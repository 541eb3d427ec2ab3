"""A tiny HTTP server with a known, artificial capacity, to calibrate the load tool.

Requests are served one at a time with a fixed service time (a virtual single-server
queue), so capacity is exactly ``1 / service_s`` req/s whatever the timer jitter. It
speaks tenantry's predict/model/metrics API and simulates an LRU model cache, so hit
rate, loads and evictions on /metrics are real for the traffic it sees. With a service
time of 0 it measures how fast the generator itself can go on this machine.

Run: ``python -m engine.loadtest.fakeserver --port 0 --service-ms 4 --cache-models 50``
(prints ``listening on HOST:PORT`` once bound).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import OrderedDict

from engine.serving.server import new_event_loop

__all__ = ["FakeState", "main", "serve"]

_MODEL_BYTES = 125_000


class FakeState:
    """Queue clock, simulated LRU cache and counters shared by all connections."""

    def __init__(self, service_s: float, cache_models: int, features: int, miss_s: float):
        self.service_s, self.miss_s = service_s, miss_s
        self.cache_models, self.features = cache_models, features
        self.next_free = 0.0
        self.cache: OrderedDict[str, None] = OrderedDict()
        self.counts = {"hits": 0, "misses": 0, "evictions": 0, "requests": 0,
                       "unsynthetic": 0, "multiplexed": 0}

    def admit(self, tenant: str) -> float:
        """Account one predict for ``tenant``; returns its completion time (monotonic)."""
        extra = 0.0
        if tenant in self.cache:
            self.counts["hits"] += 1
            self.cache.move_to_end(tenant)
        else:
            self.counts["misses"] += 1
            extra = self.miss_s
            if self.cache_models > 0:
                self.cache[tenant] = None
                if len(self.cache) > self.cache_models:
                    self.cache.popitem(last=False)
                    self.counts["evictions"] += 1
        done = max(time.monotonic(), self.next_free) + self.service_s + extra
        self.next_free = done
        return done

    def metrics(self) -> str:
        """Prometheus text exposition in tenantry's metric names."""
        c = self.counts
        lines = [
            "# TYPE tenantry_cache_hits_total counter", f"tenantry_cache_hits_total {c['hits']}",
            "# TYPE tenantry_cache_misses_total counter",
            f"tenantry_cache_misses_total {c['misses']}",
            "# TYPE tenantry_cache_evictions_total counter",
            f"tenantry_cache_evictions_total {c['evictions']}",
            "# TYPE tenantry_cache_bytes gauge",
            f"tenantry_cache_bytes {len(self.cache) * _MODEL_BYTES}",
            "# TYPE tenantry_cache_models gauge", f"tenantry_cache_models {len(self.cache)}",
            "# TYPE tenantry_model_load_seconds histogram",
            f'tenantry_model_load_seconds_bucket{{le="+Inf"}} {c["misses"]}',
            f"tenantry_model_load_seconds_count {c['misses']}",
            f"tenantry_model_load_seconds_sum {c['misses'] * self.miss_s}",
            "# TYPE tenantry_replicas gauge", "tenantry_replicas 1",
            "# TYPE fake_unsynthetic_requests_total counter",
            f"fake_unsynthetic_requests_total {c['unsynthetic']}",
            "# TYPE fake_multiplexed_requests_total counter",
            f"fake_multiplexed_requests_total {c['multiplexed']}",
        ]
        return "\n".join(lines) + "\n"


def _response(status: int, body: bytes, ctype: str = "application/json") -> bytes:
    reason = {200: "OK", 404: "Not Found"}.get(status, "Error")
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: {ctype}\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


class _Handler(asyncio.Protocol):
    """One client connection; requests are answered in order."""

    def __init__(self, state: FakeState) -> None:
        self.state, self.buf, self.transport = state, bytearray(), None
        self.tail: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # always a Transport here

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            lines = head.split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in lines[1:])}
            length = int(headers.get("content-length", "0"))
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4:end + 4 + length])
            del self.buf[:end + 4 + length]
            method, path = lines[0].split(" ")[:2]
            self._handle(method, path, headers, body)

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        state, loop = self.state, asyncio.get_running_loop()
        parts = path.split("/")
        if path == "/metrics":
            reply, at = _response(200, state.metrics().encode(), "text/plain"), 0.0
        elif len(parts) == 5 and parts[1:3] == ["v1", "tenants"] and parts[4] == "model":
            names = [f"f{i}" for i in range(state.features)]
            doc = {"tenant_id": parts[3], "production": {"version": 1, "feature_names": names}}
            reply, at = _response(200, json.dumps(doc).encode()), 0.0
        elif len(parts) == 5 and parts[4] == "predict" and method == "POST":
            tenant = parts[3]
            state.counts["requests"] += 1
            state.counts["unsynthetic"] += headers.get("x-tenantry-synthetic") != "1"
            state.counts["multiplexed"] += headers.get("serve_multiplexed_model_id") == tenant
            if tenant.startswith("missing"):
                reply, at = _response(404, b'{"detail":"unknown tenant"}'), 0.0
            else:
                rows = len(json.loads(body)["instances"])
                answer = {"tenant_id": tenant, "model_version": 1, "predictions": [0.5] * rows}
                reply, at = _response(200, json.dumps(answer).encode()), state.admit(tenant)
        else:
            reply, at = _response(404, b'{"detail":"not found"}'), 0.0
        fut: asyncio.Future[None] = loop.create_future()
        prev = self.tail
        self.tail = fut

        def send() -> None:
            if prev is not None and not prev.done():  # keep responses in request order
                prev.add_done_callback(lambda _f: send())
                return
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(reply)
            fut.set_result(None)

        delay = at - time.monotonic()
        loop.call_later(delay, send) if delay > 0 else send()


async def serve(host: str, port: int, state: FakeState) -> asyncio.base_events.Server:
    """Start the server (returns once bound)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Handler(state), host, port, backlog=1024)


def main(argv: list[str] | None = None) -> int:
    """CLI entry: serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--service-ms", type=float, default=4.0)
    parser.add_argument("--miss-ms", type=float, default=0.0)
    parser.add_argument("--cache-models", type=int, default=100)
    parser.add_argument("--features", type=int, default=20)
    args = parser.parse_args(argv)
    state = FakeState(args.service_ms / 1000.0, args.cache_models, args.features,
                      args.miss_ms / 1000.0)
    loop = new_event_loop()
    server = loop.run_until_complete(serve(args.host, args.port, state))
    port = server.sockets[0].getsockname()[1]
    print(f"listening on {args.host}:{port}", flush=True)
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
