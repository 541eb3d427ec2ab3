"""Where a replica's :class:`~engine.shadow.worker.ShadowWorker` runs.

* :class:`ActorExecutor` (the default inside Ray): a Ray actor of its own — a separate
  process with its own GIL, by default on the replica's node under ``SCHED_IDLE`` so it
  only uses CPU production leaves idle, or on nodes given by ``shadow_worker_resources``.
  It is owned by the replica (it dies with it) and restarts when killed. Batches go over a
  local Unix socket when the actor shares the replica's node (:mod:`engine.shadow.channel`,
  far cheaper for the replica), else as Ray actor calls; lifecycle is always Ray's.
* :class:`ThreadExecutor`: a thread in the replica process (tests, and serving without
  Ray). It shares the replica's GIL, so it is not isolated from production.

Both take batches, answer :meth:`ShadowExecutor.poll` without blocking, and can
``restart`` a worker that hangs (the mirror's watchdog decides when).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Protocol

from engine.serving.model import load_model
from engine.settings import ServeSettings
from engine.shadow.channel import SUPPORTED as CHANNEL_SUPPORTED
from engine.shadow.channel import ChannelClient, ChannelClosed, ChannelServer
from engine.shadow.log import PairLog
from engine.shadow.models import Loader
from engine.shadow.tables import ShadowTables
from engine.shadow.worker import BatchResult, ShadowBatch, ShadowWorker, lower_priority
from registry import Registry

PING_EVERY_S = 0.2  # while a worker restarts, how often to ask whether it is back

__all__ = ["ActorExecutor", "Endpoint", "ShadowExecutor", "ShadowWorkerActor",
           "ThreadExecutor", "build_worker", "new_executor"]


class ShadowExecutor(Protocol):
    """Runs a shadow worker somewhere and hands it batches.

    ``poll`` never blocks and needs no other thread of the replica to deliver results, so
    the mirror can drive everything from the replica's event loop.
    """

    kind: str
    transport: str  # how batches reach the worker
    restarts: int

    def submit(self, batch: ShadowBatch) -> Any:
        """Send ``batch`` to the worker (batches run one at a time, in order); a handle."""

    def poll(self, handle: Any) -> BatchResult | None:
        """The batch's result, or None while it runs.

        Raises:
            Exception: the worker failed the batch (crashed, restarted, cancelled).
        """

    def ready(self) -> bool:
        """Whether the worker can take a batch now (False while it restarts)."""

    def restart(self) -> None:
        """Replace a worker that hangs; its in-flight batches fail."""

    def close(self, timeout_s: float) -> None:
        """Flush the worker's pair log and stop it."""


def build_worker(registry_root: str, settings: ServeSettings, replica: str,
                 loader: Loader | None = None) -> ShadowWorker:
    """A started worker for one replica (its own registry handle, pair log and cache)."""
    registry = Registry.open(registry_root)
    log = PairLog(ShadowTables.for_registry(registry), settings.shadow_flush_rows,
                  settings.shadow_flush_s, replica=replica)
    return ShadowWorker(log, loader or partial(load_model, registry), registry.new_snapshot(),
                        int(settings.shadow_cache_mb * 1024 * 1024)).start()


def replica_name() -> str:
    """``host:pid`` of this process (recorded with every pair)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class ThreadExecutor:
    """The worker on one thread of this process."""

    kind = "thread"
    transport = "in-process"

    def __init__(self, factory: Callable[[], ShadowWorker]) -> None:
        self._factory = factory
        self.worker = factory()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tenantry-shadow-worker")
        self.restarts = 0

    def submit(self, batch: ShadowBatch) -> Future[BatchResult]:
        return self._pool.submit(self.worker.process, batch)

    def poll(self, handle: Future[BatchResult]) -> BatchResult | None:
        return handle.result() if handle.done() else None

    def ready(self) -> bool:
        return True

    def restart(self) -> None:
        # A thread cannot be killed: abandon it (it ends when its hung call returns, and
        # adds nothing more to the old pair log, which is flushed and closed here).
        old_pool, old_worker = self._pool, self.worker
        self.worker = self._factory()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tenantry-shadow-worker")
        old_pool.shutdown(wait=False, cancel_futures=True)
        old_worker.close()
        self.restarts += 1

    def close(self, timeout_s: float) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.worker.close()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a shadow actor runs and, if it listens, its local channel's address."""

    node_id: str
    pid: int
    address: str  # empty: Ray calls only


class ShadowWorkerActor:
    """Ray actor around a :class:`ShadowWorker` (one per model-host replica).

    With ``owner_pid`` it also serves a local channel to that process; batches from the
    channel and from Ray calls run one at a time.
    """

    def __init__(self, registry_root: str, settings: dict[str, Any], replica: str,
                 loader: Loader | None = None, owner_pid: int = 0) -> None:
        import ray  # noqa: PLC0415 - only where Ray runs

        s = ServeSettings(**settings)
        if s.shadow_idle_priority:
            lower_priority()  # the whole process (threads started later inherit it)
        self.worker = build_worker(registry_root, s, replica, loader)
        self._lock = threading.Lock()
        self.channel: ChannelServer | None = None
        if owner_pid and CHANNEL_SUPPORTED:
            try:
                self.channel = ChannelServer(self.process, owner_pid)
            except OSError:
                self.channel = None  # cannot listen here: the replica uses Ray calls
        self._node_id = ray.get_runtime_context().get_node_id()

    def endpoint(self) -> Endpoint:
        return Endpoint(self._node_id, os.getpid(), self.channel.address if self.channel else "")

    def process(self, batch: ShadowBatch) -> BatchResult:
        with self._lock:
            return self.worker.process(batch)

    def stats(self) -> dict[str, Any]:
        return self.worker.stats()

    def close(self) -> dict[str, Any]:
        if self.channel is not None:
            self.channel.close()
        with self._lock:
            return self.worker.close()


@dataclass(frozen=True, slots=True)
class _ChannelCall:
    channel: ChannelClient
    seq: int


class ActorExecutor:
    """The worker in a Ray actor owned by this process (dies with it, restarts if killed)."""

    kind = "actor"

    def __init__(self, registry_root: str, settings: ServeSettings, replica: str,
                 loader: Loader | None = None) -> None:
        import ray  # noqa: PLC0415 - only where Ray runs
        from ray.util.scheduling_strategies import (  # noqa: PLC0415
            NodeAffinitySchedulingStrategy,
        )

        self._ray = ray
        self._node_id = ray.get_runtime_context().get_node_id()
        options: dict[str, Any] = {"num_cpus": 0, "max_restarts": -1, "max_task_retries": 0,
                                   "max_concurrency": 1}
        resources = settings.shadow_resources()
        if resources:
            options["resources"] = resources
        else:  # beside the replica: mirrored rows never leave the machine
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                self._node_id, soft=True)
        if settings.shadow_transport not in ("auto", "ray"):
            raise ValueError(f"shadow_transport must be auto or ray, not "
                             f"{settings.shadow_transport!r}")
        owner = os.getpid() if settings.shadow_transport == "auto" else 0
        self.actor: Any = ray.remote(ShadowWorkerActor).options(**options).remote(
            registry_root, asdict(settings), replica, loader, owner)
        self.restarts = 0
        self.transport = "starting"  # then "socket" or "ray", per (re)started actor
        self._channel: ChannelClient | None = None
        # Nothing is sent before a ping succeeds (after creation and after each failure or
        # restart), so the watchdog never mistakes a worker still starting for a hung one.
        self._healthy = False
        self._ping: Any = None
        self._ping_at = 0.0

    def submit(self, batch: ShadowBatch) -> Any:
        if self._channel is not None:
            try:
                return _ChannelCall(self._channel, self._channel.send(batch))
            except ChannelClosed:
                self._unhealthy()
                raise
        return self.actor.process.remote(batch)

    def _done(self, ref: Any) -> bool:
        ready, _ = self._ray.wait([ref], timeout=0, fetch_local=True)
        return bool(ready)

    def poll(self, handle: Any) -> BatchResult | None:
        if isinstance(handle, _ChannelCall):
            try:
                answer = handle.channel.result(handle.seq)
            except ChannelClosed:
                self._unhealthy()
                raise
            if answer is None:
                return None
            ok, value = answer
            if not ok:
                raise RuntimeError(f"shadow worker failed a batch: {value}")
            return value  # type: ignore[no-any-return]  # a BatchResult from process()
        # ray.wait/ray.get on a finished small object: no callback thread of Ray's needs
        # this process's GIL to hand the result over.
        if not self._done(handle):
            return None
        try:
            return self._ray.get(handle, timeout=0)  # type: ignore[no-any-return]
        except Exception:
            self._unhealthy()  # crashed or restarting: ping before sending more
            raise

    def _unhealthy(self) -> None:
        self._healthy = False
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def ready(self) -> bool:
        # After a failure the actor restarts (Ray re-runs its constructor); batches sent
        # meanwhile would fail with ActorUnavailableError, so wait for a ping to succeed.
        if self._healthy:
            return True
        if self._ping is not None and self._done(self._ping):
            ping, self._ping = self._ping, None
            try:
                endpoint: Endpoint = self._ray.get(ping, timeout=0)
            except Exception:  # noqa: BLE001 - not back yet
                return False
            self._connect(endpoint)
            self._healthy = True
            return True
        if self._ping is None and time.monotonic() - self._ping_at >= PING_EVERY_S:
            self._ping_at = time.monotonic()
            self._ping = self.actor.endpoint.remote()
        return False

    def _connect(self, endpoint: Endpoint) -> None:
        """Use the (re)started actor's local channel if it is on this node and answers."""
        self.transport = "ray"
        if endpoint.address and endpoint.node_id == self._node_id:
            try:
                self._channel = ChannelClient(endpoint.address, endpoint.pid)
                self.transport = "socket"
            except ChannelClosed:
                self._channel = None  # e.g. another network namespace: Ray calls work

    def restart(self) -> None:
        self._unhealthy()
        self._ping = None
        self._ray.kill(self.actor, no_restart=False)
        self.restarts += 1

    def stats(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """The worker's own counters (a round trip to the actor)."""
        stats: dict[str, Any] = self._ray.get(self.actor.stats.remote(), timeout=timeout_s)
        return stats

    def close(self, timeout_s: float) -> None:
        self._unhealthy()  # drop the channel; the actor flushes its log below
        try:
            self._ray.get(self.actor.close.remote(), timeout=timeout_s)
        except Exception:  # noqa: BLE001 - a dead or hung worker: nothing more to flush
            pass
        self._ray.kill(self.actor, no_restart=True)


def new_executor(registry_root: str, settings: ServeSettings,
                 loader: Loader | None = None) -> ShadowExecutor:
    """The executor ``settings.shadow_worker`` asks for (``auto``: an actor inside Ray)."""
    kind = settings.shadow_worker
    if kind == "auto":
        import ray  # noqa: PLC0415

        kind = "actor" if ray.is_initialized() else "thread"
    replica = replica_name()
    if kind == "actor":
        return ActorExecutor(registry_root, settings, replica, loader)
    if kind == "thread":
        return ThreadExecutor(partial(build_worker, registry_root, settings, replica, loader))
    raise ValueError(f"shadow_worker must be auto, actor or thread, not {kind!r}")
