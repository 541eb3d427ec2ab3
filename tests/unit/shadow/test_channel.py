"""The local channel between a replica and its shadow worker (real Unix sockets)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from engine.shadow.channel import SUPPORTED, ChannelClient, ChannelClosed, ChannelServer

pytestmark = pytest.mark.skipif(not SUPPORTED,
                                reason="abstract Unix sockets and SO_PEERCRED are Linux's")


def _wait(client: ChannelClient, seq: int, timeout: float = 10.0) -> tuple[bool, Any]:
    deadline = time.monotonic() + timeout
    while (answer := client.result(seq)) is None:
        assert time.monotonic() < deadline, "no answer in time"
        time.sleep(0.001)
    return answer


class _Handler:
    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, payload: Any) -> Any:
        self.gate.wait(10)
        self.calls.append(payload)
        if isinstance(payload, str) and payload == "boom":
            raise ValueError("shadow model exploded")
        return payload


@pytest.fixture()
def handler() -> _Handler:
    return _Handler()


@pytest.fixture()
def server(handler: _Handler) -> Iterator[ChannelServer]:
    srv = ChannelServer(handler, owner_pid=os.getpid())
    yield srv
    srv.close()


def test_answers_come_back_per_call_even_when_read_out_of_order(
        server: ChannelServer, handler: _Handler) -> None:
    client = ChannelClient(server.address, os.getpid())
    handler.gate.clear()  # three calls queued before the worker takes the first
    seqs = [client.send({"n": i}) for i in range(3)]
    assert client.result(seqs[0]) is None
    handler.gate.set()
    assert _wait(client, seqs[2]) == (True, {"n": 2})
    assert _wait(client, seqs[0]) == (True, {"n": 0})
    assert _wait(client, seqs[1]) == (True, {"n": 1})
    assert client.result(seqs[1]) is None  # an answer is taken once
    client.close()


def test_a_failing_call_is_reported_and_the_channel_keeps_working(
        server: ChannelServer, handler: _Handler) -> None:
    client = ChannelClient(server.address, os.getpid())
    assert _wait(client, client.send("boom")) == (False, "ValueError: shadow model exploded")
    assert _wait(client, client.send("fine")) == (True, "fine")


def test_a_payload_larger_than_the_socket_buffers_arrives_whole(server: ChannelServer) -> None:
    client = ChannelClient(server.address, os.getpid())
    big = np.arange(4_000_000, dtype=np.float64)  # 32 MB: sent over many non-blocking pumps
    ok, echoed = _wait(client, client.send(big), timeout=60)
    assert ok and np.array_equal(echoed, big)


def test_another_process_is_refused_before_anything_is_read(
        server: ChannelServer, handler: _Handler) -> None:
    script = (
        "import os, socket, sys\n"
        "from engine.shadow.channel import _frame\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(10)\n"
        "s.connect('\\0' + sys.argv[1])\n"
        "try:\n"
        "    s.sendall(_frame((0, 'hello')) + _frame((1, 'intruder')))\n"
        "    print(repr(s.recv(100)))\n"
        "except (ConnectionResetError, BrokenPipeError):\n"
        "    print('reset')\n")
    out = subprocess.run([sys.executable, "-c", script, server.address[1:]], capture_output=True,
                         text=True, timeout=60, check=False,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                             os.path.dirname(os.path.abspath(__file__))))))
    assert out.stdout.strip() in ("b''", "reset"), out.stderr  # closed without an answer
    assert server.rejected == 1 and handler.calls == []
    client = ChannelClient(server.address, os.getpid())  # the owner still gets in
    assert _wait(client, client.send("mine")) == (True, "mine")


def test_the_client_refuses_a_server_that_is_not_the_expected_process(
        server: ChannelServer) -> None:
    with pytest.raises(ChannelClosed, match="is not served by pid"):
        ChannelClient(server.address, os.getpid() + 1)
    with pytest.raises(ChannelClosed, match="cannot reach"):
        ChannelClient("\0tenantry-shadow-nobody-listens", os.getpid())


def test_calls_open_when_the_worker_goes_away_fail(server: ChannelServer,
                                                   handler: _Handler) -> None:
    client = ChannelClient(server.address, os.getpid())
    handler.gate.clear()
    seq = client.send("pending")
    time.sleep(0.1)
    server.close()  # as when the worker's process dies mid-batch
    handler.gate.set()
    with pytest.raises(ChannelClosed):
        _wait(client, seq)
    with pytest.raises(ChannelClosed):
        client.send("more")
