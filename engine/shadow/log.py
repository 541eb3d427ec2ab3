"""The shadow pair log: compared predictions buffered in memory, written to Delta in batches.

The mirror's worker hands over one :class:`ComparedRequest` per mirrored request; a flusher
thread writes the buffer to ``shadow/log`` (partitioned by date) every ``flush_rows`` rows
or ``flush_s`` seconds, together with per-tenant counts of dropped and failed mirrors
(``shadow/stats``). :meth:`PairLog.close` writes what is left on a graceful shutdown.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from engine.shadow.tables import PAIRS, STATS, ShadowTables

__all__ = ["ComparedRequest", "PairLog"]

MAX_BUFFER_FACTOR = 10  # while writes fail, keep at most this many batches in memory


@dataclass(frozen=True, slots=True)
class ComparedRequest:
    """One mirrored request: both models' predictions for its rows and their latencies."""

    tenant_id: str
    request_id: str
    production_version: int
    shadow_version: int
    production: np.ndarray
    shadow: np.ndarray
    production_latency_s: float
    shadow_latency_s: float
    at: float  # epoch seconds when production answered


class PairLog:
    """Buffers compared requests and drop counts; writes them to Delta in batches."""

    def __init__(self, tables: ShadowTables, flush_rows: int = 2000, flush_s: float = 2.0,
                 replica: str = "") -> None:
        self.tables = tables
        self.flush_rows = max(1, flush_rows)
        self.flush_s = flush_s
        self.replica = replica
        self._lock = threading.Lock()
        self._pending: list[ComparedRequest] = []
        self._rows = 0
        self._counts: Counter[tuple[str, int, str]] = Counter()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()
        self.written_rows = 0
        self.write_errors = 0
        self.discarded_rows = 0
        self.closed = False

    # -- producers (the mirror) ---------------------------------------------------------
    def add(self, item: ComparedRequest) -> None:
        """Buffer one compared request (never blocks on I/O)."""
        if self.closed:
            return
        with self._lock:
            self._pending.append(item)
            self._rows += len(item.production)
            full = self._rows >= self.flush_rows
        if full:
            self._wake.set()

    def count(self, tenant_id: str, shadow_version: int, outcome: str, n: int = 1) -> None:
        """Count a mirror that produced no pair (``dropped``, ``error`` or ``timeout``)."""
        with self._lock:
            self._counts[(tenant_id, shadow_version, outcome)] += n

    @property
    def buffered_rows(self) -> int:
        """Rows waiting to be written."""
        return self._rows

    # -- writing ------------------------------------------------------------------------
    def flush(self) -> int:
        """Write everything buffered now; returns the pair rows written.

        A failed write keeps the rows for the next flush (up to a bound) and is counted.
        """
        with self._write_lock:
            with self._lock:
                items, self._pending, self._rows = self._pending, [], 0
                counts, self._counts = self._counts, Counter()
            written = 0
            try:
                if items:
                    table = _pairs_table(items, self.replica)
                    self.tables.append(PAIRS, table)
                    written = table.num_rows
                    self.written_rows += written
                    items = []
                if counts:
                    self.tables.append(STATS, _stats_table(counts, self.replica))
                    counts = Counter()
            except Exception:  # noqa: BLE001 - keep serving; retry on the next flush
                self.write_errors += 1
                self._requeue(items, counts)
            return written

    def _requeue(self, items: list[ComparedRequest],
                 counts: Counter[tuple[str, int, str]]) -> None:
        with self._lock:
            self._pending[:0] = items
            self._rows += sum(len(i.production) for i in items)
            self._counts.update(counts)
            while self._rows > self.flush_rows * MAX_BUFFER_FACTOR and self._pending:
                dropped = self._pending.pop(0)
                self._rows -= len(dropped.production)
                self.discarded_rows += len(dropped.production)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            if not self._stop.is_set():
                self.flush()

    def start(self) -> None:
        """Start the flusher thread."""
        self._thread = threading.Thread(target=self._run, name="tenantry-shadow-log",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the flusher and write what is left (idempotent)."""
        if self.closed:
            return
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.flush()
        self.closed = True


def _pairs_table(items: list[ComparedRequest], replica: str) -> pa.Table:
    sizes = np.array([len(i.production) for i in items])
    at = np.repeat(np.array([i.at for i in items]), sizes)
    ts = pa.array((at * 1e6).astype("int64"), pa.timestamp("us", tz="UTC"))
    dates = [datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d") for t in at]
    prod = np.concatenate([i.production for i in items]).astype(np.float64)
    shadow = np.concatenate([i.shadow for i in items]).astype(np.float64)

    def per_row(values: list[object]) -> np.ndarray:
        return np.repeat(np.array(values), sizes)

    return pa.table({
        "date": dates,
        "ts": ts,
        "request_id": per_row([i.request_id for i in items]),
        "row": np.concatenate([np.arange(n, dtype=np.int32) for n in sizes]),
        "tenant_id": per_row([i.tenant_id for i in items]),
        "production_version": per_row([i.production_version for i in items]).astype(np.int64),
        "shadow_version": per_row([i.shadow_version for i in items]).astype(np.int64),
        "production": prod,
        "shadow": shadow,
        "abs_diff": np.abs(prod - shadow),
        "production_latency_ms": per_row([i.production_latency_s * 1e3 for i in items]),
        "shadow_latency_ms": per_row([i.shadow_latency_s * 1e3 for i in items]),
        "replica": [replica] * len(prod),
    })


def _stats_table(counts: Counter[tuple[str, int, str]], replica: str) -> pa.Table:
    now = datetime.now(UTC)
    keys = sorted(counts)
    return pa.table({
        "date": [now.strftime("%Y-%m-%d")] * len(keys),
        "ts": pa.array([now] * len(keys), pa.timestamp("us", tz="UTC")),
        "tenant_id": [k[0] for k in keys],
        "shadow_version": pa.array([k[1] for k in keys], pa.int64()),
        "outcome": [k[2] for k in keys],
        "count": pa.array([counts[k] for k in keys], pa.int64()),
        "replica": [replica] * len(keys),
    })
