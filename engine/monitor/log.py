"""The sampled prediction log: what production answered, written to ``<root>/predictions``.

:class:`PredictionLog` is a model host's after-predict hook. On the request path it only
decides and appends a reference: a synthetic request (``x-tenantry-synthetic: 1``) is never
logged; the first ``log_first_per_hour`` requests of each tenant in each UTC hour are
(so small tenants are seen), and every later one with probability ``log_sample``. Buffered
rows are bounded by ``log_buffer_rows``: past it a request is dropped and counted
(``tenantry_prediction_log_rows_total{outcome="dropped"}``).

A flusher thread turns the buffer into one Arrow table and one Delta commit every
``log_flush_s`` seconds or ``log_flush_rows`` rows; a failed write keeps the rows for the
next flush while the bound allows. :meth:`PredictionLog.close` (the host's graceful stop)
writes what is left. At 1% the thread holds the GIL for a few microseconds per logged row
per flush; the Delta write itself runs in Rust.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from engine.metrics import Metrics
from engine.monitor.tables import PREDICTIONS, DeltaAppender
from registry import ModelVersion
from training.profile import score_values

if TYPE_CHECKING:
    from engine.serving.host import ModelHostState

__all__ = ["LoggedRequest", "PredictionLog", "attach_prediction_log"]

FIRST, FRACTION = "first", "fraction"
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One sampled production request, as the request path hands it over (no copies)."""

    tenant_id: str
    version: int
    x: np.ndarray
    predictions: np.ndarray
    request_id: str
    at: float  # epoch seconds
    sampled: str  # FIRST | FRACTION


class PredictionLog:
    """Samples production requests into a bounded buffer; a thread writes them to Delta."""

    def __init__(self, table: DeltaAppender, metrics: Metrics | None = None, *,
                 sample: float = 0.01, first_per_hour: int = 5, buffer_rows: int = 20_000,
                 flush_rows: int = 5_000, flush_s: float = 10.0, replica: str = "",
                 clock: Clock = time.time, rand: Callable[[], float] = random.random) -> None:
        self.table = table
        self.sample = sample
        self.first_per_hour = first_per_hour
        self.buffer_rows = max(1, buffer_rows)
        self.flush_rows = max(1, flush_rows)
        self.flush_s = flush_s
        self.replica = replica
        self.clock = clock
        self._rand = rand
        metrics = metrics or Metrics()
        self._logged = metrics.prediction_log_rows.labels("logged")
        self._dropped = metrics.prediction_log_rows.labels("dropped")
        self._hour = -1
        self._first: dict[str, int] = {}  # tenant -> requests logged as FIRST this hour
        self._buffer: deque[LoggedRequest] = deque()
        self._rows = 0
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.closed = False
        self.logged_rows = 0
        self.dropped_rows = 0
        self.synthetic = 0
        self.write_errors = 0
        self.last_error = ""

    # -- the request path (the host's after-predict hook) -------------------------------
    def after_predict(self, tenant_id: str, production: ModelVersion, x: np.ndarray,
                      predictions: np.ndarray, request_id: str, synthetic: bool,
                      latency_s: float) -> None:
        """Maybe buffer this request; never blocks on I/O, never raises."""
        if synthetic:
            self.synthetic += 1
            return
        if self.closed:
            return
        try:
            now = self.clock()
            hour = int(now // 3600)
            if hour != self._hour:
                self._hour, self._first = hour, {}
            seen = self._first.get(tenant_id, 0)
            if seen < self.first_per_hour:
                self._first[tenant_id] = seen + 1
                how = FIRST
            elif self.sample > 0 and self._rand() < self.sample:
                how = FRACTION
            else:
                return
            n = len(x)
            with self._lock:
                if self._rows + n > self.buffer_rows:
                    self.dropped_rows += n
                    self._dropped.inc(n)
                    return
                self._buffer.append(LoggedRequest(tenant_id, production.version, x,
                                                  predictions, request_id, now, how))
                self._rows += n
                full = self._rows >= self.flush_rows
            if full:
                self._wake.set()
        except Exception as exc:  # noqa: BLE001 - logging must never reach the client
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]

    def pinned_versions(self, tenant_id: str) -> Iterable[int]:
        """The log pins no versions in the host's cache."""
        return ()

    @property
    def buffered_rows(self) -> int:
        """Rows waiting to be written."""
        return self._rows

    # -- writing ------------------------------------------------------------------------
    def flush(self) -> int:
        """Write everything buffered now, in one commit; returns the rows written.

        A failed write keeps the rows for the next flush as far as ``buffer_rows`` allows;
        the rest are dropped and counted.
        """
        with self._write_lock:
            with self._lock:
                items, self._buffer, self._rows = list(self._buffer), deque(), 0
            if not items:
                return 0
            try:
                rows = log_rows(items, self.replica)
                self.table.append(rows)
            except Exception as exc:  # noqa: BLE001 - keep serving; retry on the next flush
                self.write_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                self._requeue(items)
                return 0
            self.logged_rows += rows.num_rows
            self._logged.inc(rows.num_rows)
            return rows.num_rows

    def _requeue(self, items: list[LoggedRequest]) -> None:
        with self._lock:
            kept: list[LoggedRequest] = []
            room = self.buffer_rows - self._rows
            for item in reversed(items):  # keep the newest
                if len(item.x) <= room:
                    kept.append(item)
                    room -= len(item.x)
                else:
                    self.dropped_rows += len(item.x)
                    self._dropped.inc(len(item.x))
            self._buffer.extendleft(kept)  # extendleft reverses: back in arrival order
            self._rows += sum(len(i.x) for i in kept)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            if not self._stop.is_set():
                self.flush()

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start the flusher thread (once; ``loop`` is not needed: it writes off-loop)."""
        if self._thread is not None or self.closed:
            return
        self._thread = threading.Thread(target=self._run, name="tenantry-prediction-log",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop logging, stop the flusher and write what is left (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10.0)
        self.flush()

    def stats(self) -> dict[str, object]:
        """Counters of this replica's log."""
        return {"logged_rows": self.logged_rows, "dropped_rows": self.dropped_rows,
                "buffered_rows": self._rows, "synthetic_skipped": self.synthetic,
                "write_errors": self.write_errors, "last_error": self.last_error}


def log_rows(items: list[LoggedRequest], replica: str) -> pa.Table:
    """The ``predictions`` rows of buffered requests: one per predicted row."""
    sizes = np.array([len(i.x) for i in items], dtype=np.int64)
    at = np.repeat(np.array([i.at for i in items], dtype=np.float64), sizes)
    widths = np.repeat(np.array([i.x.shape[1] if i.x.ndim == 2 else 0 for i in items]), sizes)
    flat = np.concatenate([np.asarray(i.x, dtype=np.float64).ravel() for i in items])
    offsets = np.concatenate([[0], np.cumsum(widths)]).astype(np.int32)
    features = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()),
                                        pa.array(flat, pa.float64(), mask=np.isnan(flat)))
    days = {int(d): datetime.fromtimestamp(d * 86400, UTC).strftime("%Y-%m-%d")
            for d in np.unique(at // 86400)}

    def per_row(values: list[object]) -> list[object]:
        return [v for v, n in zip(values, sizes.tolist(), strict=True) for _ in range(n)]

    return pa.table({
        "date": [days[int(d)] for d in at // 86400],
        "ts": pa.array((at * 1e6).astype(np.int64), pa.timestamp("us", tz="UTC")),
        "tenant_id": per_row([i.tenant_id for i in items]),
        "version": pa.array(per_row([i.version for i in items]), pa.int64()),
        "request_id": per_row([i.request_id for i in items]),
        "row": pa.array(np.concatenate([np.arange(n, dtype=np.int32) for n in sizes])),
        "score": np.concatenate([score_values(i.predictions) for i in items]),
        "features": features,
        "sampled": per_row([i.sampled for i in items]),
        "replica": [replica] * int(sizes.sum()),
    })


def attach_prediction_log(state: ModelHostState) -> PredictionLog | None:
    """Add a prediction log to a model host's after-predict hooks (None when
    ``log_sample`` is 0: the log is off, first requests of the hour included)."""
    s = state.settings
    if s.log_sample <= 0:
        return None
    log = PredictionLog(DeltaAppender.for_registry(state.registry, PREDICTIONS), state.metrics,
                        sample=s.log_sample, first_per_hour=s.log_first_per_hour,
                        buffer_rows=s.log_buffer_rows, flush_rows=s.log_flush_rows,
                        flush_s=s.log_flush_s,
                        replica=f"{socket.gethostname()}:{os.getpid()}")  # as shadow pairs
    state.hooks.append(log)
    return log
