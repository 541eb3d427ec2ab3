"""The shadow mirror: sample production requests, replay them on the shadow version.

``after_predict`` runs on the request path after the production answer exists: a dict
lookup, a window check, a coin flip and a ``put_nowait`` onto a bounded queue (full: the
request is dropped and counted). One worker thread with its own small model cache takes
items, predicts with the shadow version, observes metrics and hands compared pairs to the
:class:`PairLog`. Whatever the shadow model does — raise,
hang, return garbage — the client only ever sees the production answer.

The worker is deliberately *not* given a lower OS priority: it shares the GIL with the
request loop, so a de-prioritised thread preempted while holding the GIL would stall
production (priority inversion). What keeps it cheap is the sampling, the bounded queue
and that XGBoost's predict releases the GIL.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.metrics import Metrics
from engine.serving.model import LoadedModel
from engine.shadow.config import ShadowConfig
from engine.shadow.log import ComparedRequest, PairLog
from engine.shadow.models import Loader, ShadowModels
from registry import Alias, ModelVersion, RegistrySnapshot

__all__ = ["OUTCOMES", "MirrorItem", "ShadowMirror"]

OUTCOMES = ("ok", "synthetic", "error", "timeout", "dropped", "skipped")
DRAIN_S = 2.0  # on close, time the worker gets to finish queued items
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class MirrorItem:
    """A production request queued for the shadow worker."""

    tenant_id: str
    production: ModelVersion
    shadow: ModelVersion
    x: np.ndarray
    predictions: np.ndarray
    request_id: str
    synthetic: bool
    latency_s: float
    at: float  # epoch seconds
    enqueued: float  # monotonic seconds


@dataclass(frozen=True, slots=True)
class _Active:
    """A config pre-digested for the request path."""

    start: float
    until: float
    fraction: float
    version: int | None
    config: ShadowConfig


class ShadowMirror:
    """Implements the host's ShadowHook: sampling, bounded queue, worker, pair log."""

    def __init__(self, snapshot: RegistrySnapshot, metrics: Metrics, log: PairLog,
                 loader: Loader, queue_size: int = 1024, cache_bytes: int = 16 << 20,
                 max_age_s: float = 10.0, clock: Clock = time.time,
                 rand: Callable[[], float] = random.random) -> None:
        self.snapshot = snapshot
        self.metrics = metrics
        self.log = log
        self.models = ShadowModels(cache_bytes, loader)
        self.max_age_s = max_age_s
        self.clock = clock
        self._rand = rand
        self._queue: queue.Queue[MirrorItem | None] = queue.Queue(max(1, queue_size))
        self._configs: dict[str, _Active] = {}
        self._outcome = {o: metrics.shadow_requests.labels(o) for o in OUTCOMES}
        self.outcomes: Counter[str] = Counter()
        self.last_error = ""
        self._closing = False
        self._drain_until = 0.0
        self._worker: threading.Thread | None = None
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
            item = MirrorItem(tenant_id, production, shadow, np.array(x, copy=True),
                              np.array(predictions, dtype=np.float64), request_id, synthetic,
                              latency_s, now, time.monotonic())
        except Exception:  # noqa: BLE001 - shadow trouble must never reach the client
            self._count("skipped")
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._count("dropped")
            if not synthetic:
                self.log.count(tenant_id, shadow.version, "dropped")

    def pinned_versions(self, tenant_id: str) -> list[int]:
        """Explicitly configured shadow versions (the host cache may keep them)."""
        active = self._configs.get(tenant_id)
        return [active.version] if active and active.version is not None else []

    # -- the worker ---------------------------------------------------------------------
    def _count(self, outcome: str) -> None:
        self.outcomes[outcome] += 1
        self._outcome[outcome].inc()

    def process(self, item: MirrorItem) -> None:
        """Predict one queued request with its shadow version and record the outcome."""
        if time.monotonic() - item.enqueued > self.max_age_s:
            self._fail(item, "timeout")
            return
        try:
            model = self.models.get(item.shadow)
            x = _align(item.x, item.production.feature_names, model)
            started = time.perf_counter()
            shadow = np.asarray(model.predict(x), dtype=np.float64).reshape(-1)
            shadow_latency = time.perf_counter() - started
            if shadow.shape != item.predictions.shape:
                raise ValueError(f"shadow returned {shadow.shape[0]} predictions for "
                                 f"{item.predictions.shape[0]} rows")
        except Exception as exc:  # noqa: BLE001 - a broken shadow is an outcome, not a crash
            self.last_error = f"{item.tenant_id}@v{item.shadow.version}: " \
                              f"{type(exc).__name__}: {exc}"[:500]
            self._fail(item, "error")
            return
        if item.synthetic:
            self._count("synthetic")  # load-test traffic: exercised, never logged
            return
        for d in np.abs(shadow - item.predictions):
            self.metrics.shadow_abs_diff.observe(float(d))
        self._count("ok")
        self.log.add(ComparedRequest(item.tenant_id, item.request_id, item.production.version,
                                     item.shadow.version, item.predictions, shadow,
                                     item.latency_s, shadow_latency, item.at))

    def _fail(self, item: MirrorItem, outcome: str) -> None:
        self._count(outcome)
        if not item.synthetic:
            self.log.count(item.tenant_id, item.shadow.version, outcome)

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.25)
            except queue.Empty:
                if self._closing:
                    return
                continue
            if item is None or (self._closing and time.monotonic() > self._drain_until):
                return
            self.process(item)

    def start(self) -> None:
        """Start the worker thread."""
        self._worker = threading.Thread(target=self._run, name="tenantry-shadow-worker",
                                        daemon=True)
        self._worker.start()

    @property
    def queue_depth(self) -> int:
        """Requests waiting for the worker."""
        return self._queue.qsize()

    def stats(self) -> dict[str, Any]:
        """Live counters of this replica."""
        return {"outcomes": {o: self.outcomes[o] for o in OUTCOMES},
                "queue_depth": self.queue_depth, "queue_size": self._queue.maxsize,
                "buffered_pairs": self.log.buffered_rows, "written_pairs": self.log.written_rows,
                "shadow_models": len(self.models), "last_error": self.last_error}

    def close(self) -> None:
        """Stop mirroring, give queued items a moment, flush the pair log (idempotent)."""
        if self._closing:
            return
        self._closing = True
        for stop in self.on_close:
            stop()
        self._drain_until = time.monotonic() + DRAIN_S
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        if self._worker is not None:
            self._worker.join(DRAIN_S + 0.5)
        self.log.close()


def _digest(config: ShadowConfig) -> _Active:
    start, until = config.window()
    return _Active(start, until, config.fraction, config.version, config)


def _align(x: np.ndarray, production_names: tuple[str, ...], model: LoadedModel) -> np.ndarray:
    """``x`` (production feature order) in the shadow model's feature order.

    Raises:
        ValueError: the shadow model needs features production does not send.
    """
    names = model.feature_names
    if not production_names or tuple(production_names) == tuple(names):
        return x
    index = {n: i for i, n in enumerate(production_names)}
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f"shadow model needs features production lacks: {missing[:5]}")
    return np.ascontiguousarray(x[:, [index[n] for n in names]])
