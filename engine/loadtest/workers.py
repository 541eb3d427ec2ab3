"""Several load processes, each owning a round-robin share of a stage's schedule.

A Python process saturates long before a server on the other core does, so the schedule
is dealt out to ``n`` spawned processes that stay alive across stages. All of them use
the same ``time.monotonic`` start instant (CLOCK_MONOTONIC is system-wide on Linux), and
their per-request outcomes are merged back into schedule order.

The start instant is fixed only once every process has said it is ready (imports done,
after spawning) and holds its share of the schedule (unpickled): a process still
starting when the schedule begins would send everything it is late for at once, a burst
the server would be blamed for (measured: 100-800 ms "stalls" in ~half of short stages).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from typing import Any, Self

import numpy as np

from engine.loadtest.client import ShareResult, run_share
from engine.loadtest.schedule import split_round_robin
from engine.serving.server import new_event_loop

__all__ = ["LoadWorkers", "ShareJob", "StageOutcome"]

_START_DELAY_S = 0.25  # from the last process arming to the first send (margin for a busy box)
_READY_TIMEOUT_S = 120.0  # spawning imports numpy & co.; slow on a loaded box
_READY, _ARMED = "ready", "armed"


@dataclass(frozen=True)
class ShareJob:
    """What one load process sends during one stage."""

    host: str
    port: int
    offsets: np.ndarray
    requests: list[bytes]
    timeout_s: float
    max_connections: int


@dataclass(frozen=True)
class StageOutcome:
    """Merged per-request outcomes of a stage, in schedule order."""

    offsets: np.ndarray
    latency_s: np.ndarray
    done_offset_s: np.ndarray
    lag_s: np.ndarray
    status: np.ndarray
    cpu_s: tuple[float, ...]  # per load process
    wall_s: float


class _Slot:
    """Worker ``w``'s two progress counters inside a shared array."""

    def __init__(self, array: Any, worker: int) -> None:
        self._array, self._base = array, 2 * worker

    def __getitem__(self, index: int) -> int:
        return int(self._array[self._base + index])

    def __setitem__(self, index: int, value: int) -> None:
        self._array[self._base + index] = value


def _worker_main(pipe: Pipe, counters: Any, worker: int) -> None:
    """Process entry: run each received ShareJob, answer with its ShareResult."""
    loop = new_event_loop()
    slot = _Slot(counters, worker)
    try:
        pipe.send(_READY)
        while True:
            job = pipe.recv()
            if job is None:
                return
            pipe.send(_ARMED)
            start_at = pipe.recv()  # the same instant for every process
            slot[0], slot[1] = 0, 0
            result = loop.run_until_complete(run_share(
                job.host, job.port, job.offsets, job.requests, start_at, job.timeout_s,
                job.max_connections, slot))
            pipe.send(result)
    except (EOFError, KeyboardInterrupt):
        return
    finally:
        loop.close()


class LoadWorkers:
    """A fixed set of spawned load processes; use as a context manager."""

    def __init__(self, processes: int) -> None:
        if processes < 1:
            raise ValueError("at least one load process is needed")
        ctx = mp.get_context("spawn")
        self.processes = processes
        self.counters: Any = ctx.Array("q", 2 * processes, lock=False)  # a lock-free RawArray
        self._pipes: list[Pipe] = []
        self._procs: list[mp.process.BaseProcess] = []
        for w in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child, self.counters, w), daemon=True,
                               name=f"tenantry-load-{w}")
            proc.start()
            self._pipes.append(parent)
            self._procs.append(proc)
        try:
            self._expect(_READY)
        except BaseException:
            self.close()
            raise

    def _expect(self, message: str) -> None:
        """Wait until every process has sent ``message``."""
        deadline = time.monotonic() + _READY_TIMEOUT_S
        for pipe, proc in zip(self._pipes, self._procs, strict=True):
            while not pipe.poll(0.05):
                if not proc.is_alive():
                    raise RuntimeError(f"load process {proc.name} died while starting")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"load process {proc.name} not {message} in time")
            got = pipe.recv()
            if got != message:
                raise RuntimeError(f"load process {proc.name} sent {got!r}, not {message!r}")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def progress(self) -> tuple[int, int]:
        """(sent, done) summed over processes for the running stage."""
        values = list(self.counters)
        return sum(values[0::2]), sum(values[1::2])

    def run_stage(self, host: str, port: int, offsets: np.ndarray, requests: list[bytes],
                  timeout_s: float, max_connections: int,
                  poll: Any = None) -> StageOutcome:
        """Run one stage across all processes and merge the outcomes.

        Args:
            host: target host.
            port: target port.
            offsets: intended send offsets, sorted.
            requests: raw request bytes aligned with ``offsets``.
            timeout_s: per-request timeout measured from the intended time.
            max_connections: open connections allowed per process.
            poll: optional callable invoked about 4 times a second while waiting.

        Returns:
            the merged stage outcome.
        """
        n = len(offsets)
        shares = split_round_robin(n, self.processes)
        for idx in range(len(self.counters)):
            self.counters[idx] = 0
        for pipe, share in zip(self._pipes, shares):
            pipe.send(ShareJob(host, port, offsets[share], [requests[i] for i in share],
                               timeout_s, max_connections))
        self._expect(_ARMED)
        start_at = time.monotonic() + _START_DELAY_S
        for pipe in self._pipes:
            pipe.send(start_at)
        limit = start_at + (float(offsets[-1]) if n else 0.0) + timeout_s + 30.0
        results: list[ShareResult | None] = [None] * self.processes
        while any(r is None for r in results):
            for w, pipe in enumerate(self._pipes):
                if results[w] is None and pipe.poll(0.05):
                    results[w] = pipe.recv()
            if poll is not None:
                poll()
            if time.monotonic() > limit:
                raise TimeoutError("a load process did not finish its share in time")
            if not all(p.is_alive() for p in self._procs):
                raise RuntimeError("a load process died")
        out = {name: np.empty(n, dtype=dtype) for name, dtype in
               (("latency_s", float), ("done_offset_s", float), ("lag_s", float),
                ("status", np.int16))}
        for share, res in zip(shares, results):
            assert res is not None
            for name, column in out.items():
                column[share] = getattr(res, name)
        cpu = tuple(r.cpu_s for r in results if r is not None)
        return StageOutcome(offsets, out["latency_s"], out["done_offset_s"], out["lag_s"],
                            out["status"], cpu, time.monotonic() - start_at)

    def close(self) -> None:
        """Stop every load process (bounded wait, then terminate)."""
        for pipe in self._pipes:
            try:
                pipe.send(None)
            except (OSError, BrokenPipeError):
                pass
        for proc in self._procs:
            proc.join(timeout=2.0)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=1.0)
        self._pipes.clear()
        self._procs.clear()
