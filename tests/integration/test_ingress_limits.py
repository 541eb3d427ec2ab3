"""The ingress's limits and timeouts, over raw sockets (answers parsed with h11).

Through the ``serving`` app (HAProxy in front of two model hosts, request timeout 3 s):

- a body over the limit (by Content-Length) -> 413 with the JSON error body on the head
  alone, before any of the body is sent (the size rules run before HAProxy waits for it);
- a chunked body -> 411 (JSON);
- ``Expect: 100-continue`` -> ``100 Continue`` (from HAProxy), then the body, then 200;
- ``HEAD`` on the model route -> 200 with the GET's headers and no body, and the
  connection stays usable;
- a client sending its head one byte per 0.5 s -> 408 (HAProxy's own HTML body: errors its
  HTTP/1 parser raises before any rule runs keep HAProxy's default pages) after
  the 3 s request timeout, while another client's predicts are answered meanwhile;
- ``/healthz`` answered by HAProxy itself; ``/readyz`` reports both replicas.

Without Ray: a bare HAProxy (:class:`HaproxyProcess`) with ``max_connections=3`` in front
of a trivial uvicorn app -> with 3 idle keep-alive connections open, a 4th connection's
request gets 503 ``Overloaded``; after one of the 3 closes, new connections are served.
"""

from __future__ import annotations

import json
import select
import shutil
import socket
import tempfile
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx
import pytest

from engine.ingress.config import IngressConfig
from engine.ingress.process import HaproxyProcess
from engine.ingress.runtime import SlotTarget
from engine.ingress.stats import up_slots
from engine.serving.server import ThreadedServer
from tests.conftest import wait_for

from .conftest import free_port
from .test_ingress_desync import (
    BODY,
    ROW,
    TIMEOUT_S,
    VICTIM,
    expect_request,
    get_model,
    next_answer,
    parse_answers,
    predict_head,
    read_until_eof,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def addr(serving: Any) -> tuple[str, int]:
    parts = urlsplit(serving.url)
    assert parts.hostname in ("127.0.0.1", "localhost"), "loopback only"
    return parts.hostname, int(parts.port or 80)


def connect(addr: tuple[str, int]) -> socket.socket:
    return socket.create_connection(addr, timeout=TIMEOUT_S)


def error_of(body: bytes) -> str:
    return str(json.loads(body)["error"])


def test_body_over_limit_by_content_length_gets_413_json(addr: tuple[str, int],
                                                         serving: Any) -> None:
    size = serving.settings.ingress_max_body_bytes + 1
    with connect(addr) as sock:
        sock.sendall(predict_head(b"Content-Length: %d" % size))
        readable, _, _ = select.select([sock], [], [], 2.0)  # well inside the 3 s timeout
        raw = read_until_eof(sock)
    answers = parse_answers(raw)
    assert [a.status for a in answers] == [413], raw
    assert answers[0].headers["content-type"] == "application/json"
    assert error_of(answers[0].body) == "PayloadTooLarge"
    assert readable, "no answer to the head alone: HAProxy waited for the body first"


def test_chunked_body_gets_411_json(addr: tuple[str, int], serving: Any) -> None:
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)
    with connect(addr) as sock:
        sock.sendall(predict_head(b"Transfer-Encoding: chunked", b"Connection: close") + body)
        raw = read_until_eof(sock)
    answers = parse_answers(raw)
    assert [a.status for a in answers] == [411], raw
    assert answers[0].headers["content-type"] == "application/json"
    assert error_of(answers[0].body) == "LengthRequired"


def test_expect_100_continue_then_200(addr: tuple[str, int], serving: Any) -> None:
    conn = h11.Connection(h11.CLIENT)
    with connect(addr) as sock:
        sock.sendall(predict_head(b"Expect: 100-continue", b"Content-Length: %d" % len(BODY),
                                  b"Connection: close"))
        expect_request(conn, "POST")
        interim = None
        for _ in range(100):  # until the interim answer; the body is not sent yet
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
                continue
            interim = event
            break
        assert isinstance(interim, h11.InformationalResponse), interim
        assert interim.status_code == 100
        sock.sendall(BODY)
        answer = next_answer(conn, sock)
        assert answer is not None
        assert read_until_eof(sock) == b""
    assert answer.status == 200, answer.body
    doc = answer.doc
    assert doc["tenant_id"] == VICTIM and doc["model_version"] == 1
    assert len(doc["predictions"]) == 1


def test_head_has_no_body_and_the_connection_stays_usable(addr: tuple[str, int],
                                                           serving: Any) -> None:
    conn = h11.Connection(h11.CLIENT)
    with connect(addr) as sock:
        sock.sendall(b"HEAD /v1/tenants/%s/model HTTP/1.1\r\nHost: tenantry\r\n\r\n"
                     % VICTIM.encode())
        expect_request(conn, "HEAD")
        head = next_answer(conn, sock)
        assert head is not None
        assert head.status == 200, head
        assert head.body == b""
        time.sleep(0.2)  # a body wrongly sent after the HEAD answer would have arrived now
        sock.setblocking(False)
        try:
            stray = sock.recv(65536)
        except BlockingIOError:
            stray = b""
        sock.settimeout(TIMEOUT_S)
        assert not stray and not conn.trailing_data[0], f"bytes after HEAD: {stray!r}"
        assert conn.their_state is h11.DONE, "HEAD answer closed the connection"
        conn.start_next_cycle()
        sock.sendall(get_model(VICTIM, close=True))
        expect_request(conn, "GET")
        answer = next_answer(conn, sock)
        assert answer is not None
        assert read_until_eof(sock) == b""
    assert answer.status == 200 and answer.tenant == VICTIM, answer


def test_slow_head_is_cut_with_408_while_others_are_served(addr: tuple[str, int],
                                                           serving: Any) -> None:
    timeout_s = serving.settings.ingress_request_timeout_s
    head = get_model(VICTIM)
    out: dict[str, Any] = {}

    def slow_client() -> None:
        started = time.monotonic()
        received = b""
        with connect(addr) as sock:
            for byte in head:  # one byte per 0.5 s, until HAProxy answers or closes
                try:
                    sock.send(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    break
                readable, _, _ = select.select([sock], [], [], 0.5)
                if readable:
                    received = read_until_eof(sock)
                    break
            out["elapsed"] = time.monotonic() - started
            out["raw"] = received

    thread = threading.Thread(target=slow_client, daemon=True)
    thread.start()
    statuses = []
    with httpx.Client(base_url=serving.url, timeout=TIMEOUT_S) as client:
        for i in range(200):
            if not thread.is_alive():
                break
            tenant = f"t{i % 12:02d}"
            resp = client.post(f"/v1/tenants/{tenant}/predict", json={"instances": [ROW]})
            statuses.append((resp.status_code, resp.json().get("tenant_id") == tenant))
            time.sleep(0.05)
    thread.join(2 * TIMEOUT_S)
    assert not thread.is_alive()
    assert timeout_s - 0.5 <= out["elapsed"] <= timeout_s + 2.5, out
    answers = parse_answers(out["raw"])
    assert [a.status for a in answers] in ([408], []), out["raw"]  # 408, or just closed
    assert len(statuses) >= 5 and set(statuses) == {(200, True)}, statuses


def test_healthz_is_answered_by_haproxy(serving: Any) -> None:
    resp = httpx.get(f"{serving.url}/healthz", timeout=TIMEOUT_S)
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}
    assert "server" not in resp.headers  # no uvicorn behind it


def test_readyz_reports_both_replicas(serving: Any) -> None:
    resp = httpx.get(f"{serving.url}/readyz", timeout=TIMEOUT_S)
    assert resp.status_code == 200
    assert resp.json()["replicas"] == 2 == serving.settings.replicas


# -- the connection cap, on a bare HAProxy (no Ray) ---------------------------------------------
async def trivial_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every HTTP request 200 with a small JSON body (``/readyz`` included)."""
    if scope["type"] != "http":
        return
    body = json.dumps({"ok": True, "path": scope["path"]}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def keepalive_get(sock: socket.socket, conn: h11.Connection, close: bool = False) -> Any:
    if conn.our_state is h11.DONE:
        conn.start_next_cycle()
    sock.sendall(get_model(VICTIM, close=close))
    expect_request(conn, "GET")
    return next_answer(conn, sock)


def test_connection_cap_answers_503_overloaded() -> None:
    workdir = tempfile.mkdtemp(prefix="tenantry-cap-")
    server = ThreadedServer(trivial_app, "127.0.0.1", 0, name="tenantry-cap-backend")
    backend_port = server.start()
    cfg = IngressConfig(bind_host="127.0.0.1", bind_port=free_port(),
                        socket_path=f"{workdir}/admin.sock", control_port=free_port(),
                        max_connections=3, request_timeout_s=3.0, check_interval_ms=200)
    proc = HaproxyProcess(cfg, workdir)
    idle: list[socket.socket] = []
    try:
        proc.start()
        proc.api.fill(1, SlotTarget("127.0.0.1", backend_port))
        wait_for(lambda: 1 in up_slots(proc.api.stats()), timeout=15,
                 what=lambda: proc.log_tail())
        addr = ("127.0.0.1", cfg.bind_port)
        for _ in range(3):  # three idle keep-alive connections, each served once
            sock = connect(addr)
            idle.append(sock)
            answer = keepalive_get(sock, h11.Connection(h11.CLIENT))
            assert answer is not None and answer.status == 200, answer
        with connect(addr) as fourth:
            fourth.sendall(get_model(VICTIM, close=True))
            answers = parse_answers(read_until_eof(fourth))
        assert [a.status for a in answers] == [503]
        assert error_of(answers[0].body) == "Overloaded"
        idle.pop().close()

        def served_again() -> bool:
            with connect(addr) as sock:
                sock.sendall(get_model(VICTIM, close=True))
                return [a.status for a in parse_answers(read_until_eof(sock))] == [200]

        wait_for(served_again, timeout=5, every=0.1)
    finally:
        for sock in idle:
            sock.close()
        proc.stop()
        server.stop(5)
        shutil.rmtree(workdir, ignore_errors=True)
