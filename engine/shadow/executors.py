"""Where a replica's shadow worker (:class:`~engine.shadow.pump.Pump` + worker) runs.

* :class:`ActorExecutor` (the default inside Ray): a Ray actor of its own — a separate
  process with its own GIL, on the replica's node (it reads the replica's spool, a file
  on that node) under ``SCHED_IDLE`` so it only uses CPU production leaves idle. It is
  owned by the replica (it dies with it) and Ray restarts it when it dies; a batch that
  hangs makes it exit so that it is restarted (:meth:`Pump.hung`).
* :class:`ThreadExecutor`: the pump on a thread of the replica process (tests, and
  serving without Ray). It shares the replica's GIL, so it is not isolated from
  production; a hung batch's thread is abandoned and a new worker started.

The replica never talks to its worker on the request path: it appends to the spool, and
reads the worker's counters from ``worker.json`` when asked.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from engine.serving.model import SelfCheckMemo, load_model
from engine.settings import ServeSettings
from engine.shadow.log import PairLog
from engine.shadow.models import Loader
from engine.shadow.pump import Pump
from engine.shadow.tables import ShadowTables
from engine.shadow.worker import ShadowWorker, lower_priority
from registry import Registry

__all__ = ["ActorExecutor", "ShadowExecutor", "ShadowWorkerActor", "ThreadExecutor",
           "build_pump", "new_executor"]

WATCH_S = 0.5  # how often the watchdog looks for a hung batch
HUNG_EXIT = 70  # exit status of a worker process that replaces itself


class ShadowExecutor(Protocol):
    """Runs a shadow worker for one replica's spool."""

    kind: str

    def close(self, timeout_s: float) -> None:
        """Let the worker read the spool to its end and commit, then stop it."""


def build_pump(registry_root: str, settings: ServeSettings, replica: str, spool: Path,
               loader: Loader | None = None) -> Pump:
    """A worker (own registry handle, pair log and model cache) and its pump for ``spool``."""
    registry = Registry.open(registry_root)
    log = PairLog(ShadowTables.for_registry(registry), settings.shadow_flush_rows,
                  settings.shadow_flush_s, replica=replica)
    # Like a replica's cache: a model evicted and loaded again is not self-checked again.
    loader = loader or partial(load_model, registry, selfchecked=SelfCheckMemo())
    worker = ShadowWorker(log, loader, registry.new_snapshot(),
                          int(settings.shadow_cache_mb * 2**20))
    return Pump(worker, spool, settings.shadow_max_age_s)


def replica_name() -> str:
    """``host:pid`` of this process (recorded with every pair)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _watch(pump: Callable[[], Pump], on_hang: Callable[[], None],
           stop: threading.Event) -> None:
    while not stop.wait(WATCH_S):
        if pump().hung():
            on_hang()


class ThreadExecutor:
    """The pump on a thread of this process."""

    kind = "thread"

    def __init__(self, factory: Callable[[], Pump]) -> None:
        self._factory = factory
        self._stop = threading.Event()
        self.restarts = 0
        self.pump = self._start()
        threading.Thread(target=_watch, args=(lambda: self.pump, self._restart, self._stop),
                         name="tenantry-shadow-watchdog", daemon=True).start()

    def _start(self) -> Pump:
        pump = self._factory()
        threading.Thread(target=pump.run, args=(self._stop,), name="tenantry-shadow-worker",
                         daemon=True).start()
        return pump

    def _restart(self) -> None:
        # A thread cannot be killed: the hung one is abandoned (its pump is stopped, so it
        # commits nothing when its call returns); a new pump resumes from the spool.
        self.pump = self._start()
        self.restarts += 1

    def close(self, timeout_s: float) -> None:
        self._stop.set()
        self.pump.drain(timeout_s)
        self.pump.worker.log.close()


class ShadowWorkerActor:
    """Ray actor around a :class:`Pump` (one per model-host replica)."""

    def __init__(self, registry_root: str, settings: dict[str, Any], replica: str,
                 spool: str, loader: Loader | None = None) -> None:
        s = ServeSettings(**settings)
        if s.shadow_idle_priority:
            lower_priority()  # the whole process (threads started later inherit it)
        self.pump = build_pump(registry_root, s, replica, Path(spool), loader)
        self._stop = threading.Event()
        threading.Thread(target=self.pump.run, args=(self._stop,),
                         name="tenantry-shadow-worker", daemon=True).start()
        threading.Thread(target=_watch, args=(lambda: self.pump, _exit_hung, self._stop),
                         name="tenantry-shadow-watchdog", daemon=True).start()

    def pid(self) -> int:
        return os.getpid()

    def close(self, timeout_s: float) -> bool:
        self._stop.set()
        done = self.pump.drain(timeout_s)
        self.pump.worker.log.close()
        return done


def _exit_hung() -> None:
    os._exit(HUNG_EXIT)  # Ray restarts the actor; the spool keeps every record


class ActorExecutor:
    """The worker in a Ray actor owned by this process (dies with it, restarts if killed)."""

    kind = "actor"

    def __init__(self, registry_root: str, settings: ServeSettings, replica: str,
                 spool: Path, loader: Loader | None = None) -> None:
        import ray
        from ray.util.scheduling_strategies import (
            NodeAffinitySchedulingStrategy,
        )

        self._ray = ray
        # On this node, never elsewhere: the spool is a file here.
        options: dict[str, Any] = {
            "num_cpus": 0, "max_restarts": -1, "max_task_retries": 0, "max_concurrency": 2,
            "scheduling_strategy": NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=False)}
        self.close_error = ""  # why the last close could not wait for the worker
        self.actor: Any = ray.remote(ShadowWorkerActor).options(**options).remote(
            registry_root, asdict(settings), replica, str(spool), loader)

    def close(self, timeout_s: float) -> None:
        try:
            self._ray.get(self.actor.close.remote(timeout_s), timeout=timeout_s + 2.0)
        except Exception as exc:  # noqa: BLE001 - a dead or hung worker: the spool keeps the rest
            self.close_error = f"{type(exc).__name__}: {exc}"[:500]
        self._ray.kill(self.actor, no_restart=True)


def new_executor(registry_root: str, settings: ServeSettings, spool: Path,
                 loader: Loader | None = None) -> ShadowExecutor:
    """The executor ``settings.shadow_worker`` asks for (``auto``: an actor inside Ray)."""
    kind = settings.shadow_worker
    if kind == "auto":
        import ray

        kind = "actor" if ray.is_initialized() else "thread"
    replica = replica_name()
    if kind == "actor":
        return ActorExecutor(registry_root, settings, replica, spool, loader)
    if kind == "thread":
        return ThreadExecutor(partial(build_pump, registry_root, settings, replica, spool,
                                      loader))
    raise ValueError(f"shadow_worker must be auto, actor or thread, not {kind!r}")
