"""The router's upstream pool against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from engine.serving.proxy import UpstreamError, UpstreamPool

REQUEST = b"POST /v1/tenants/acme/predict HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n"


@dataclass
class Upstream:
    """Answers ``ok``; can close idle connections or drop requests, like a real upstream."""

    drop_on_reused: bool = False  # close instead of answering a connection's 2nd+ request
    drop_always: bool = False
    connections: int = 0
    answered: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        served = 0
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(2)
                if self.drop_always or (self.drop_on_reused and served):
                    break
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
                served += 1
                self.answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    def close_idle(self) -> None:
        for w in self.writers:
            w.close()


@contextlib.asynccontextmanager
async def _pool(upstream: Upstream) -> AsyncIterator[UpstreamPool]:
    """A pool to ``upstream`` served on loopback (the server stops afterwards)."""
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    try:
        yield UpstreamPool("127.0.0.1", int(server.sockets[0].getsockname()[1]))
    finally:
        server.close()


def test_a_connection_the_upstream_closed_while_idle_is_skipped() -> None:
    upstream = Upstream()

    async def go() -> None:
        async with _pool(upstream) as pool:
            assert (await pool.request(REQUEST, b"{}")).status == 200
            upstream.close_idle()  # e.g. its keep-alive timeout passed
            await asyncio.sleep(0.1)  # the FIN has arrived
            assert (await pool.request(REQUEST, b"{}")).status == 200
        assert (upstream.connections, upstream.answered) == (2, 2)
    asyncio.run(go())


def test_a_pooled_connection_closed_as_the_request_arrives_is_retried_once() -> None:
    upstream = Upstream(drop_on_reused=True)

    async def go() -> None:
        async with _pool(upstream) as pool:
            assert (await pool.request(REQUEST, b"{}")).status == 200
            # The pooled connection is open, but the upstream closes it instead of answering.
            assert (await pool.request(REQUEST, b"{}")).status == 200
        assert (upstream.connections, upstream.answered) == (2, 2)
    asyncio.run(go())


def test_a_new_connection_that_dies_mid_request_is_not_retried() -> None:
    upstream = Upstream(drop_always=True)

    async def go() -> None:
        async with _pool(upstream) as pool:
            with pytest.raises(UpstreamError) as err:
                await pool.request(REQUEST, b"{}")
        assert err.value.sent  # it may have been processed: the caller must not resend
        assert upstream.connections == 1
    asyncio.run(go())
