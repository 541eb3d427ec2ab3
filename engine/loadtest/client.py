"""A lean asyncio HTTP/1.1 keep-alive client for the hot path of the load generator.

One ``asyncio.Protocol`` per connection parses just enough of a response (status,
Content-Length or chunked body, Connection: close). A semaphore bounds open connections;
a request waiting for a free connection keeps its intended send time, so the wait shows
up as latency. ``run_share`` drives one process's share of an open-loop schedule.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = [
    "STATUS_CONN_ERROR",
    "STATUS_TIMEOUT",
    "Connection",
    "ConnectionPool",
    "Counters",
    "ShareResult",
    "build_request",
    "run_share",
]

STATUS_CONN_ERROR = 0
STATUS_TIMEOUT = -1
_MIN_SLEEP_S = 0.001


def build_request(method: str, host: str, path: str, body: bytes = b"",
                  headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """Serialize one HTTP/1.1 keep-alive request.

    Args:
        method: ``GET`` or ``POST``.
        host: value of the Host header.
        path: request target, e.g. ``/v1/tenants/a/predict``.
        body: request body (JSON bytes) or empty.
        headers: extra headers.

    Returns:
        the raw request bytes.
    """
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if body or method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buf = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes, bool]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._try_complete(eof=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._try_complete(eof=True)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection closed by server"))

    def close(self) -> None:
        """Close the socket (used when a response cannot be reused or was abandoned)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def request(self, raw: bytes) -> tuple[int, bytes, bool]:
        """Send ``raw`` and wait for the response.

        Returns:
            (status code, body, whether the connection may be reused).
        """
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self._waiter

    def _try_complete(self, eof: bool) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end]).lower()
        status = int(head[9:12])
        keep = b"\r\nconnection: close" not in head
        start = end + 4
        pos = head.find(b"\r\ncontent-length:")
        if pos >= 0:
            stop = head.find(b"\r\n", pos + 2)
            length = int(head[pos + 17:stop if stop >= 0 else len(head)])
            if len(buf) < start + length:
                return
            body_end = start + length
        elif b"\r\ntransfer-encoding: chunked" in head:
            term = buf.find(b"0\r\n\r\n", start)
            if term < 0:
                return
            body_end = term + 5
        elif eof:
            body_end, keep = len(buf), False
        else:
            return
        body = bytes(buf[start:body_end])
        del buf[:body_end]
        waiter.set_result((status, body, keep))


class ConnectionPool:
    """Up to ``max_connections`` keep-alive connections to one host:port."""

    def __init__(self, host: str, port: int, max_connections: int) -> None:
        self.host, self.port = host, port
        self._sem = asyncio.Semaphore(max_connections)
        self._idle: list[Connection] = []

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one request on an idle (or new) connection.

        Returns:
            (status, body).

        Raises:
            OSError: on connect or transport errors (the connection is dropped).
        """
        async with self._sem:
            conn = None
            while self._idle:
                candidate = self._idle.pop()
                if not candidate.closed:
                    conn = candidate
                    break
            if conn is None:
                loop = asyncio.get_running_loop()
                _, conn = await loop.create_connection(Connection, self.host, self.port)
            reusable = False
            try:
                status, body, reusable = await conn.request(raw)
            finally:
                if reusable and not conn.closed:
                    self._idle.append(conn)
                else:
                    conn.close()
            return status, body

    def close(self) -> None:
        """Close every idle connection."""
        for conn in self._idle:
            conn.close()
        self._idle.clear()


class Counters(Protocol):
    """Two progress slots, [0] sent and [1] done (a list or a shared-memory view)."""

    def __getitem__(self, index: int) -> int: ...

    def __setitem__(self, index: int, value: int) -> None: ...


@dataclass(frozen=True)
class ShareResult:
    """Per-request outcomes of one process's share (arrays aligned with its requests)."""

    latency_s: np.ndarray  # completion time minus intended send time
    done_offset_s: np.ndarray  # completion time relative to the stage start
    lag_s: np.ndarray  # dispatch time minus intended send time (generator lateness)
    status: np.ndarray  # HTTP status, 0 connection error, -1 timeout
    cpu_s: float  # CPU time this process spent on the share


async def _finish(tasks: set[asyncio.Task[None]], deadline: float) -> None:
    """Wait for the requests in flight until ``deadline`` (monotonic), then cancel the rest."""
    if tasks:
        await asyncio.wait(set(tasks), timeout=max(0.0, deadline - time.monotonic()))
    for task in list(tasks):
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_share(host: str, port: int, offsets: np.ndarray, requests: Sequence[bytes],
                    start_at: float, timeout_s: float, max_connections: int,
                    progress: Counters | None = None) -> ShareResult:
    """Send ``requests[i]`` at ``start_at + offsets[i]`` (``time.monotonic`` clock).

    Args:
        host: target host.
        port: target port.
        offsets: sorted intended offsets in seconds.
        requests: raw request bytes, one per offset.
        start_at: monotonic time of the stage start (shared by all load processes).
        timeout_s: a request still open ``timeout_s`` after its intended time is a timeout.
        max_connections: open-connection bound for this process.
        progress: optional 2-slot list updated with (sent, done) counts.

    Returns:
        the per-request outcomes.
    """
    n = len(offsets)
    latency = np.full(n, np.nan)
    done_at = np.full(n, np.nan)
    lag = np.zeros(n)
    status = np.full(n, STATUS_TIMEOUT, dtype=np.int16)
    pool = ConnectionPool(host, port, max_connections)
    cpu0 = time.process_time()
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int, intended: float) -> None:
        try:
            code, _ = await pool.request(requests[i])
        except (OSError, ValueError, IndexError):  # refused, reset, or unparseable reply
            code = STATUS_CONN_ERROR
        now = time.monotonic()
        latency[i], done_at[i] = now - intended, now - start_at
        status[i] = code if now - intended <= timeout_s else STATUS_TIMEOUT
        if progress is not None:
            progress[1] += 1

    i = 0
    while i < n:
        now = time.monotonic()
        while i < n and start_at + offsets[i] <= now:
            intended = start_at + offsets[i]
            lag[i] = now - intended
            task = asyncio.ensure_future(one(i, intended))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if progress is not None:
            progress[0] = i
        if i < n:
            # uvloop timers have 1 ms resolution: shorter sleeps would spin the CPU.
            await asyncio.sleep(max(_MIN_SLEEP_S, start_at + offsets[i] - time.monotonic()))
    await _finish(tasks, start_at + (float(offsets[-1]) if n else 0.0) + timeout_s)
    pool.close()
    now = time.monotonic()
    unfinished = np.isnan(latency)
    latency[unfinished] = now - (start_at + offsets[unfinished])
    done_at[unfinished] = now - start_at
    return ShareResult(latency, done_at, lag, status, time.process_time() - cpu0)
