"""The shadow mirror: sample production requests onto the replica's spool.

``after_predict`` runs on the request path after the production answer exists: a dict
lookup, a window check, a coin flip, and one framed record appended to the replica's
spool (:mod:`engine.shadow.spool`) with a single ``write`` (a spool that is full: the
request is counted ``dropped``). Nothing else of shadow mode runs on the serving loop:
no batching, no pickling, no socket, no timer. The replica's shadow worker — by default
a Ray actor process of its own at idle CPU priority (:mod:`engine.shadow.executors`) —
reads the spool, predicts, writes the pair log and acknowledges, so a record appended
survives a SIGKILL of the worker or of the replica (a new replica on the node adopts
the spool). The worker's counters reach this replica's ``/metrics`` through the
``worker.json`` file it keeps in the spool, read when scraped.

Whatever the shadow model does — raise, hang, crash its process — the client only ever
sees the production answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.metrics import DIFF_BUCKETS, Metrics
from engine.shadow.config import ShadowConfig
from engine.shadow.executors import ShadowExecutor
from engine.shadow.pump import read_totals
from engine.shadow.records import DropKey, encode_counts, encode_pair
from engine.shadow.spool import SpoolWriter
from registry import Alias, ModelVersion, RegistrySnapshot

__all__ = ["OUTCOMES", "ShadowMirror"]

OUTCOMES = ("ok", "synthetic", "error", "timeout", "dropped", "skipped")
CLOSE_S = 2.5  # on close, least time the worker gets to read the spool and commit
COUNTS_EVERY_S = 1.0  # drop counts go to the spool (and the stats table) this often
log = logging.getLogger(__name__)
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class _Active:
    """A config pre-digested for the request path."""

    start: float
    until: float
    fraction: float
    version: int | None
    config: ShadowConfig


class ShadowMirror:
    """Implements the host's ShadowHook: sampling and one spool append per mirror."""

    def __init__(self, snapshot: RegistrySnapshot, metrics: Metrics, spool: SpoolWriter,
                 executor: Callable[[], ShadowExecutor], clock: Clock = time.time,
                 rand: Callable[[], float] = random.random,
                 close_timeout_s: float = CLOSE_S) -> None:
        self.snapshot = snapshot
        self.metrics = metrics
        self.spool = spool
        self._make_executor = executor
        self.executor: ShadowExecutor | None = None
        self.clock = clock
        self._rand = rand
        self.close_timeout_s = close_timeout_s
        self._configs: dict[str, _Active] = {}
        self._own: Counter[str] = Counter()  # this replica's own outcomes: dropped, skipped
        self._counts: Counter[DropKey] = Counter()  # to append with the next counts record
        self._counts_at = 0.0
        self._closing = False
        self.on_close: list[Callable[[], None]] = []  # e.g. stop the config watcher
        metrics.shadow_source = self.totals

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
        """Maybe append this request to the spool; never blocks, never raises."""
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
            record = encode_pair(self.spool.next_seq(), tenant_id, request_id,
                                 production.version, version, now, latency_s, synthetic, x,
                                 predictions)
            if not self.spool.append(record):
                self._count("dropped")
                if not synthetic:
                    self._counts[(tenant_id, version, "dropped")] += 1
            if self._counts and time.monotonic() - self._counts_at > COUNTS_EVERY_S:
                self._append_counts()
        except Exception:  # noqa: BLE001 - shadow trouble must never reach the client
            self._count("skipped")

    def _append_counts(self) -> None:
        self._counts_at = time.monotonic()
        if self.spool.append(encode_counts(self.spool.next_seq(), dict(self._counts)),
                             force=True):
            self._counts.clear()

    def _count(self, outcome: str, n: int = 1) -> None:
        self._own[outcome] += n

    def pinned_versions(self, tenant_id: str) -> list[int]:
        """Explicitly configured shadow versions (the host cache may keep them)."""
        active = self._configs.get(tenant_id)
        return [active.version] if active and active.version is not None else []

    # -- the worker -------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start the shadow worker (once); ``loop`` is accepted for the ShadowHook
        protocol: nothing of the mirror runs on it."""
        if self.executor is None:
            niceness = os.getpriority(os.PRIO_PROCESS, 0)
            if niceness > 0:
                log.warning("this model host runs at niceness %d (Ray's worker_niceness): "
                            "its idle-priority shadow worker competes with it more than at "
                            "0; start Ray with RAY_worker_niceness=0 (tenantry does for the "
                            "clusters it starts)", niceness)
            self.executor = self._make_executor()

    def worker(self) -> dict[str, Any]:
        """The worker's last published counters ({} before its first batch)."""
        return read_totals(self.spool.path)

    def totals(self) -> tuple[dict[str, float], list[int], float]:
        """Outcome counts (this replica's and its worker's), the worker's abs-diff bucket
        counts (one per ``DIFF_BUCKETS`` bound and +Inf) and their sum, for /metrics."""
        doc = self.worker()
        counts = {o: float(self._own[o]) for o in OUTCOMES}
        for outcome, n in (doc.get("outcomes") or {}).items():
            if outcome in counts:
                counts[outcome] += float(n)
        buckets = doc.get("diff_buckets") or [0] * (len(DIFF_BUCKETS) + 1)
        return counts, [int(b) for b in buckets], float(doc.get("diff_sum", 0.0))

    @property
    def outcomes(self) -> Counter[str]:
        """Every mirror's outcome so far (this replica's and its worker's counts)."""
        return Counter({o: int(n) for o, n in self.totals()[0].items()})

    @property
    def last_error(self) -> str:
        """The worker's last error ('' if none)."""
        return str(self.worker().get("last_error", ""))

    def stats(self) -> dict[str, Any]:
        """Live counters of this replica and of its worker (as of its last batch)."""
        counts, _, _ = self.totals()
        doc = self.worker()
        doc.pop("diff_buckets", None)
        return {"pid": os.getpid(), "niceness": os.getpriority(os.PRIO_PROCESS, 0),
                "outcomes": {o: int(counts[o]) for o in OUTCOMES},
                "spool": {"id": self.spool.id, "appended": self.spool.appended,
                          "max_bytes": self.spool.max_segments * self.spool.segment_bytes},
                "worker": {"kind": self.executor.kind if self.executor else "starting",
                           **doc},
                "loop_lag": [(le if le != float("inf") else "+Inf", n)  # JSON has no inf
                             for le, n in self.metrics.loop_lag_buckets()],
                "last_error": doc.get("last_error", "")}

    def close(self) -> None:
        """Stop mirroring, let the worker read the spool to its end and commit, remove
        the spool if everything was committed (else leave it to be adopted). Idempotent."""
        if self._closing:
            return
        self._closing = True
        for stop in self.on_close:
            stop()
        if self._counts:
            self._append_counts()
        if self.executor is not None:
            self.executor.close(self.close_timeout_s)
        self.spool.close()


def _digest(config: ShadowConfig) -> _Active:
    start, until = config.window()
    return _Active(start, until, config.fraction, config.version, config)
