"""Load processes start sending only at the shared start instant, never while arming."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from engine.loadtest.fakeserver import FakeState, serve
from engine.loadtest.workers import LoadWorkers, ShareJob, _worker_main
from engine.loadtest.workload import Workload
from engine.serving.server import new_event_loop


@pytest.fixture()
def fake_server() -> Iterator[tuple[int, FakeState]]:
    """The calibration server on a loop thread of its own, on 127.0.0.1."""
    state = FakeState(service_s=0.0, cache_models=10, features=3, miss_s=0.0)
    loop = new_event_loop()
    server = loop.run_until_complete(serve("127.0.0.1", 0, state))
    port = int(server.sockets[0].getsockname()[1])
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield port, state
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    server.close()
    loop.close()


def _requests(port: int, n: int) -> list[bytes]:
    work = Workload(["a", "b"], [3, 3], f"127.0.0.1:{port}", zipf_s=1.1)
    return work.requests(n)[1]


def test_a_process_holds_its_share_until_it_gets_the_start_instant(
        fake_server: tuple[int, FakeState]) -> None:
    port, state = fake_server
    parent, child = mp.Pipe()
    counters = mp.get_context("spawn").Array("q", 2, lock=False)
    worker = threading.Thread(target=_worker_main, args=(child, counters, 0), daemon=True)
    worker.start()
    assert parent.poll(30) and parent.recv() == "ready"
    offsets = np.linspace(0.0, 0.2, 20)
    parent.send(ShareJob("127.0.0.1", port, offsets, _requests(port, 20), 10.0, 8))
    assert parent.poll(30) and parent.recv() == "armed"
    time.sleep(0.5)  # however long the others take to arm, nothing goes out meanwhile
    assert state.counts["requests"] == 0 and counters[0] == 0
    start_at = time.monotonic() + 0.05
    parent.send(start_at)
    assert parent.poll(30)
    result = parent.recv()
    assert state.counts["requests"] == 20 and (result.status == 200).all()
    parent.send(None)
    worker.join(10)
    assert not worker.is_alive()


def test_workers_are_ready_when_constructed_and_run_a_stage(
        fake_server: tuple[int, FakeState]) -> None:
    port, state = fake_server
    with LoadWorkers(2) as workers:
        assert all(p.is_alive() for p in workers._procs)
        offsets = np.linspace(0.0, 0.3, 30)
        out = workers.run_stage("127.0.0.1", port, offsets, _requests(port, 30), 10.0, 8)
    assert state.counts["requests"] == 30 and (out.status == 200).all()
    assert np.isfinite(out.latency_s).all()

