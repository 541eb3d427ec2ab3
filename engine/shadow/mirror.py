"""The shadow mirror: sample production requests and hand them to a shadow worker.

``after_predict`` runs on the request path after the production answer exists: a dict
lookup, a window check, a coin flip and an append to a bounded in-memory queue (full: the
request is dropped and counted). Every ``shadow_batch_interval_s`` while anything is
queued or in flight, a dispatch step sends what is queued as one :class:`ShadowBatch` to
the replica's :class:`~engine.shadow.worker.ShadowWorker` — by default a Ray actor process
of its own at idle CPU priority (see :mod:`engine.shadow.executors`) — collects finished
batches without blocking and turns their small results into metrics.

In a model host the step runs on the serving event loop itself (:meth:`ShadowMirror.start`
with the loop): no extra thread of the replica ever wakes up to compete for the GIL with
the request path (on a busy box a thread waiting for the GIL makes the thread holding it
hand over and wait for it to be scheduled, a tail-latency risk for production).
Without a loop (tests, plain use) a dispatcher thread runs the same step.

A watchdog restarts a worker that spends longer than ``shadow_max_age_s`` on one batch (a
hanging shadow model); the requests it held count as timeouts. Whatever the shadow model
does — raise, hang, crash its process — the client only ever sees the production answer.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.metrics import Metrics
from engine.shadow.config import ShadowConfig
from engine.shadow.executors import ShadowExecutor
from engine.shadow.worker import BatchResult, DropKey, MirrorItem, ShadowBatch
from registry import Alias, ModelVersion, RegistrySnapshot

__all__ = ["OUTCOMES", "MirrorItem", "ShadowMirror"]

OUTCOMES = ("ok", "synthetic", "error", "timeout", "dropped", "skipped")
DRAIN_S = 2.0  # on close, time queued requests get to reach the worker
CLOSE_S = 2.5  # on close, least time the worker gets to flush its pair log
MAX_IN_FLIGHT = 2  # batches sent and not answered yet (one running, one waiting)
MAX_BATCH = 512  # requests per batch
STEP_SAMPLES = 1000  # recent dispatch-step durations kept for stats()
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class _Active:
    """A config pre-digested for the request path."""

    start: float
    until: float
    fraction: float
    version: int | None
    config: ShadowConfig


@dataclass(slots=True)
class _InFlight:
    handle: Any  # the executor's
    batch: ShadowBatch
    since: float  # monotonic: when it was sent or, later, when it reached the head


class ShadowMirror:
    """Implements the host's ShadowHook: sampling, bounded queue, batching, watchdog."""

    def __init__(self, snapshot: RegistrySnapshot, metrics: Metrics, executor: ShadowExecutor,
                 queue_size: int = 1024, max_age_s: float = 10.0, interval_s: float = 0.05,
                 clock: Clock = time.time, rand: Callable[[], float] = random.random,
                 close_timeout_s: float = CLOSE_S) -> None:
        self.snapshot = snapshot
        self.metrics = metrics
        self.executor = executor
        self.queue_size = max(1, queue_size)
        self.max_age_s = max_age_s
        self.interval_s = interval_s
        self.clock = clock
        self._rand = rand
        self.close_timeout_s = close_timeout_s
        self._configs: dict[str, _Active] = {}
        self._outcome = {o: metrics.shadow_requests.labels(o) for o in OUTCOMES}
        self.outcomes: Counter[str] = Counter()
        self.last_error = ""
        self.worker_stats: dict[str, Any] = {}
        self._queue: deque[MirrorItem] = deque()
        self._in_flight: deque[_InFlight] = deque()
        self._in_flight_items = 0
        self._counts: Counter[DropKey] = Counter()  # to log with the next batch
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._step_lock = threading.Lock()
        self._closing = False
        self._dispatcher: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._step_s: deque[float] = deque(maxlen=STEP_SAMPLES)  # recent step durations
        self.on_close: list[Callable[[], None]] = []  # e.g. stop the config watcher

    # -- configuration ------------------------------------------------------------------
    def set_configs(self, configs: dict[str, ShadowConfig]) -> None:
        """Replace every tenant's config (called by the config watcher)."""
        self._configs = {t: _digest(c) for t, c in configs.items()}

    def apply(self, tenant_id: str, config: ShadowConfig | None) -> None:
        """Change one tenant's config on this replica at once (after an admin call)."""
        configs = dict(self._configs)
        if config is None:
            configs.pop(tenant_id, None)
        else:
            configs[tenant_id] = _digest(config)
        self._configs = configs

    def config(self, tenant_id: str) -> ShadowConfig | None:
        """The config this replica applies to ``tenant_id``."""
        active = self._configs.get(tenant_id)
        return active.config if active else None

    def resolve(self, tenant_id: str) -> int | None:
        """The version that shadows ``tenant_id`` now (config version or shadow alias)."""
        active = self._configs.get(tenant_id)
        if active is None:
            return None
        if active.version is not None:
            return active.version
        return self.snapshot.alias_version(tenant_id, Alias.SHADOW)

    # -- the request path (ShadowHook) --------------------------------------------------
    def after_predict(self, tenant_id: str, production: ModelVersion, x: np.ndarray,
                      predictions: np.ndarray, request_id: str, synthetic: bool,
                      latency_s: float) -> None:
        """Maybe queue this request for the shadow; never blocks, never raises."""
        active = self._configs.get(tenant_id)
        if active is None or self._closing:
            return
        try:
            now = self.clock()
            if not active.start <= now < active.until:
                return
            if active.fraction < 1.0 and self._rand() >= active.fraction:
                return
            version = active.version if active.version is not None else \
                self.snapshot.alias_version(tenant_id, Alias.SHADOW)
            if version is None or version == production.version:
                self._count("skipped")
                return
            shadow = self.snapshot.version(tenant_id, version)
            if len(self._queue) + self._in_flight_items >= self.queue_size:
                self._unanswered(tenant_id, shadow.version, synthetic, "dropped")
                return
            self._queue.append(MirrorItem(
                tenant_id, production, shadow, np.array(x, copy=True),
                np.array(predictions, dtype=np.float64), request_id, synthetic, latency_s,
                now, time.monotonic()))
            if self._loop is not None and self._tick is None:
                self._schedule()
        except Exception:  # noqa: BLE001 - shadow trouble must never reach the client
            self._count("skipped")

    def pinned_versions(self, tenant_id: str) -> list[int]:
        """Explicitly configured shadow versions (the host cache may keep them)."""
        active = self._configs.get(tenant_id)
        return [active.version] if active and active.version is not None else []

    # -- the dispatcher -----------------------------------------------------------------
    def _count(self, outcome: str, n: int = 1) -> None:
        self.outcomes[outcome] += n
        self._outcome[outcome].inc(n)

    def _unanswered(self, tenant_id: str, version: int, synthetic: bool, outcome: str) -> None:
        """A mirrored request that yields no pair: count it, and log it unless synthetic."""
        self._count(outcome)
        if not synthetic:
            with self._lock:
                self._counts[(tenant_id, version, outcome)] += 1

    def _lost(self, batch: ShadowBatch, outcome: str) -> None:
        """``batch`` never got (or will never give) an answer: count its requests."""
        with self._lock:
            self._counts.update(batch.counts)  # the worker may not have logged them
        for tenant, shadow, synthetic in zip(batch.tenants, batch.versions[:, 1].tolist(),
                                             batch.synthetic.tolist(), strict=True):
            self._unanswered(tenant, shadow, synthetic, outcome)

    def _apply(self, result: BatchResult) -> None:
        for outcome, n in result.outcomes.items():
            self._count(outcome, n)
        for d in result.abs_diffs.tolist():
            self.metrics.shadow_abs_diff.observe(d)
        if result.last_error:
            self.last_error = result.last_error
        self.worker_stats = result.stats

    def _collect(self) -> None:
        """Take the answers of finished batches (they finish in order)."""
        while self._in_flight:
            head = self._in_flight[0]
            try:
                result = self.executor.poll(head.handle)
            except Exception as exc:  # noqa: BLE001 - the worker died or was cancelled
                self.last_error = f"shadow worker: {type(exc).__name__}: {exc}"[:500]
                result = None
                self._lost(head.batch, "error")
            else:
                if result is None:
                    return  # still running; later batches queue behind it
                self._apply(result)
            self._in_flight.popleft()
            self._in_flight_items -= len(head.batch)
            if self._in_flight:
                self._in_flight[0].since = time.monotonic()

    def _watchdog(self) -> None:
        """Restart a worker stuck on one batch for longer than ``max_age_s``."""
        if not self._in_flight or time.monotonic() - self._in_flight[0].since <= self.max_age_s:
            return
        self.last_error = f"shadow worker busy with one batch for over {self.max_age_s:g}s: " \
                          "restarted"
        lost, self._in_flight = list(self._in_flight), deque()
        self._in_flight_items = 0
        for flight in lost:
            self._lost(flight.batch, "timeout")
        try:
            self.executor.restart()
        except Exception as exc:  # noqa: BLE001 - try again at the next hang
            self.last_error = f"shadow worker restart failed: {exc}"[:500]

    def _dispatch(self) -> None:
        """Send what is queued (expired requests are timeouts) as one batch."""
        if len(self._in_flight) >= MAX_IN_FLIGHT or not self.executor.ready():
            return
        now = time.monotonic()
        items: list[MirrorItem] = []
        budgets: list[float] = []
        while self._queue and len(items) < MAX_BATCH:
            item = self._queue.popleft()
            age = now - item.enqueued
            if age > self.max_age_s:
                self._unanswered(item.tenant_id, item.shadow.version, item.synthetic, "timeout")
                continue
            items.append(item)
            budgets.append(self.max_age_s - age)
        with self._lock:
            counts, self._counts = self._counts, Counter()
        if not items and not counts:
            return
        batch = ShadowBatch.pack(items, budgets, dict(counts))
        try:
            handle = self.executor.submit(batch)
        except Exception as exc:  # noqa: BLE001 - e.g. the executor is shutting down
            self.last_error = f"shadow worker: {type(exc).__name__}: {exc}"[:500]
            self._lost(batch, "error")
            return
        self._in_flight.append(_InFlight(handle, batch, now))
        self._in_flight_items += len(items)

    def _idle(self) -> bool:
        return not self._queue and not self._in_flight and not self._counts

    def step(self) -> None:
        """One dispatch step: collect finished batches, watchdog, send what is queued."""
        with self._step_lock:
            began = time.perf_counter()
            try:
                self._collect()
                self._watchdog()
                self._dispatch()
            except Exception as exc:  # noqa: BLE001 - the dispatcher must keep going
                self.last_error = f"shadow dispatcher: {type(exc).__name__}: {exc}"[:500]
            self._step_s.append(time.perf_counter() - began)

    def _run(self) -> None:
        while not self._closing:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if not self._closing:
                self.step()

    # -- on the serving loop ------------------------------------------------------------
    def _schedule(self) -> None:
        assert self._loop is not None
        self._tick = self._loop.call_later(self.interval_s, self._on_tick)

    def _on_tick(self) -> None:
        self._tick = None
        if self._closing:
            return
        self.step()
        if not self._idle():
            self._schedule()

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Run the dispatch steps on ``loop`` (from its thread), or on a thread of its own.

        Call it once; a mirror already running its own thread ignores later calls.
        """
        if self._dispatcher is not None or self._loop is not None:
            return
        if loop is not None:
            self._loop = loop
            if not self._idle():
                loop.call_soon(self._schedule)
            return
        self._dispatcher = threading.Thread(target=self._run, name="tenantry-shadow-dispatch",
                                            daemon=True)
        self._dispatcher.start()

    def drain(self, timeout_s: float) -> bool:
        """Send everything queued and collect the answers (blocking); True if all done."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.step()
            if self._idle():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(min(self.interval_s, 0.02))

    @property
    def queue_depth(self) -> int:
        """Mirrored requests not answered by the worker yet (queued or in flight)."""
        return len(self._queue) + self._in_flight_items

    def stats(self) -> dict[str, Any]:
        """Live counters of this replica and of its worker (as of its last answer)."""
        return {"pid": os.getpid(), "outcomes": {o: self.outcomes[o] for o in OUTCOMES},
                "queue_depth": self.queue_depth, "queue_size": self.queue_size,
                "worker": {"kind": self.executor.kind, "transport": self.executor.transport,
                           "restarts": self.executor.restarts, **self.worker_stats},
                "dispatch": self._step_stats(), "last_error": self.last_error}

    def _step_stats(self) -> dict[str, Any]:
        """How long recent dispatch steps held the replica (on the serving loop: no request
        is served meanwhile)."""
        steps = np.array(self._step_s) * 1e3
        if not len(steps):
            return {"steps": 0}
        return {"steps": len(steps), "p50_ms": round(float(np.percentile(steps, 50)), 3),
                "p99_ms": round(float(np.percentile(steps, 99)), 3),
                "max_ms": round(float(steps.max()), 3)}

    def close(self) -> None:
        """Stop mirroring, send what is queued, let the worker flush its log (idempotent)."""
        if self._closing:
            return
        self._closing = True
        for stop in self.on_close:
            stop()
        self._wake.set()
        if self._dispatcher is not None:
            self._dispatcher.join(2.0)
        self.drain(DRAIN_S)
        self.executor.close(self.close_timeout_s)


def _digest(config: ShadowConfig) -> _Active:
    start, until = config.window()
    return _Active(start, until, config.fraction, config.version, config)
