"""Run an ASGI app with uvicorn on its own thread and event loop, on a given or free port.

Model hosts and the router answer HTTP themselves (no Serve proxy hop): each starts one of
these inside its Ray Serve replica and advertises the bound address.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
import uvloop

__all__ = ["ThreadedServer", "new_event_loop"]

StartHook = Callable[[], Awaitable[None]]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop event loop (uvloop ships with uvicorn[standard]): the servers' and the load
    generator's."""
    return uvloop.new_event_loop()


class ThreadedServer:
    """uvicorn serving ``app`` on a daemon thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0,
                 on_start: StartHook | None = None, name: str = "tenantry-http",
                 access_log: bool = False) -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.on_start = on_start
        self.name = name
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._access_log = access_log
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, timeout: float = 30.0) -> int:
        """Bind, start serving and return the port; raises if it does not come up."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.requested_port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=self._access_log,
                                lifespan="off", http="httptools", timeout_keep_alive=120,
                                backlog=4096)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, args=(sock,), name=self.name,
                                        daemon=True)
        self._thread.start()
        waited = 0.0
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"{self.name} failed to start: {self._error!r}")
            if waited > timeout:
                raise TimeoutError(f"{self.name} did not start within {timeout}s")
            threading.Event().wait(0.01)
            waited += 0.01
        return self.port

    def _run(self, sock: socket.socket) -> None:
        loop = new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        try:
            if self.on_start is not None:
                loop.run_until_complete(self.on_start())
            assert self._server is not None
            loop.run_until_complete(self._server.serve(sockets=[sock]))
        except BaseException as exc:  # noqa: BLE001 - reported through start()/alive
            self._error = exc
        finally:
            sock.close()

    @property
    def alive(self) -> bool:
        """True while the server thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the server's loop (thread-safe)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(fn)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to finish in-flight requests and exit; wait for the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
