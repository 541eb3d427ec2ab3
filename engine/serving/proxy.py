"""A lean HTTP/1.1 reverse proxy on asyncio streams: parse just enough, forward bytes.

The router's hot path is: read one request, pick a replica, write the request to a pooled
keep-alive connection, copy the response back. No framework, no JSON parsing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["HttpRequest", "HttpResponse", "UpstreamPool", "UpstreamError", "serve_http",
           "simple_response", "read_request"]

MAX_HEAD = 64 * 1024
MAX_BODY = 32 * 1024 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 411: "Length Required",
            413: "Payload Too Large", 422: "Unprocessable Entity", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


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
        self.refused = refused  # the connection itself could not be made


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
    """The next request on a client connection, or None at EOF.

    Raises:
        ValueError: malformed or unsupported request (answered 400/411/413 by the caller).
    """
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
        """Send one request and read the whole response.

        Raises:
            UpstreamError: connect, write or read failed (``sent`` says how far it got).
        """
        try:
            return await self._request(head, body, self._pop_idle())
        except UpstreamError as exc:
            if exc.sent or exc.refused:
                raise
        # A pooled connection the upstream had closed (idle past its keep-alive timeout)
        # while its FIN was still in flight: the request never reached it, retry on a new one.
        return await self._request(head, body, None)

    def _pop_idle(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The most recently used idle connection the upstream has not closed, if any."""
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
            # A pooled connection the upstream had closed fails before it is processed.
            raise UpstreamError(f"{self.host}:{self.port}: {exc!r}",
                                sent=not (reused and isinstance(
                                    exc, (asyncio.IncompleteReadError, ConnectionError)))) \
                from exc
        except asyncio.TimeoutError as exc:
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
