"""The shadow pair log: compared predictions buffered in memory, written to Delta in batches.

The shadow worker adds one :class:`ComparedRequest` per mirrored request, and counts of
mirrors that produced no pair, each tagged with the spool record it came from. Its pump
calls :meth:`PairLog.flush` every ``flush_rows`` rows or ``flush_s`` seconds: pairs go to
``shadow/log`` (partitioned by date), counts to ``shadow/stats``, each commit carrying a
Delta *app transaction* per spool (``app_id`` the spool's id, ``version`` the highest
record sequence number in it). After a restart the worker reads those versions
(:meth:`PairLog.high_water`) and skips what was committed already, so a record sent twice
(the worker died after a commit, before acknowledging it on the spool) is logged once.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from engine.shadow.tables import PAIRS, STATS, ShadowTables, app_id

__all__ = ["ComparedRequest", "PairLog"]

DropKey = tuple[str, int, str]


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
    """Buffers compared requests and drop counts; writes them to Delta when asked."""

    def __init__(self, tables: ShadowTables, flush_rows: int = 2000, flush_s: float = 2.0,
                 replica: str = "") -> None:
        self.tables = tables
        self.flush_rows = max(1, flush_rows)
        self.flush_s = flush_s
        self.replica = replica
        self._pending: list[ComparedRequest] = []
        self._rows = 0
        self._counts: Counter[DropKey] = Counter()
        self._pair_seq: dict[str, int] = {}  # spool id -> highest seq among pending pairs
        self._count_seq: dict[str, int] = {}
        self._since = 0.0  # monotonic time of the oldest pending item; 0: none
        self.written_rows = 0
        self.write_errors = 0
        self.closed = False

    def high_water(self, spool_id: str) -> tuple[int, int]:
        """Highest record seq of ``spool_id`` committed to (pairs, stats); -1: none."""
        out = []
        for name in (PAIRS, STATS):
            dt = self.tables.handle(name)
            version = dt.transaction_version(app_id(spool_id)) if dt is not None else None
            out.append(-1 if version is None else int(version))
        return out[0], out[1]

    def add(self, item: ComparedRequest, spool_id: str = "", seq: int = 0) -> None:
        """Buffer one compared request (never blocks on I/O)."""
        if not self._since:
            self._since = time.monotonic()
        self._pending.append(item)
        self._rows += len(item.production)
        if spool_id:
            self._pair_seq[spool_id] = max(seq, self._pair_seq.get(spool_id, -1))

    def count(self, tenant_id: str, shadow_version: int, outcome: str, n: int = 1,
              spool_id: str = "", seq: int = 0) -> None:
        """Count a mirror that produced no pair (``dropped``, ``error`` or ``timeout``)."""
        if not self._since:
            self._since = time.monotonic()
        self._counts[(tenant_id, shadow_version, outcome)] += n
        if spool_id:
            self._count_seq[spool_id] = max(seq, self._count_seq.get(spool_id, -1))

    @property
    def buffered_rows(self) -> int:
        """Rows waiting to be written."""
        return self._rows

    @property
    def pending(self) -> bool:
        """Whether anything waits to be written."""
        return bool(self._since)

    def due(self) -> bool:
        """Whether a flush is due (enough rows, or the oldest waited ``flush_s``)."""
        return bool(self._since) and (self._rows >= self.flush_rows
                                      or time.monotonic() - self._since >= self.flush_s)

    def flush(self) -> bool:
        """Write everything buffered now; True when all of it is committed.

        A failed write keeps what it could not write for the next flush, and is counted.
        """
        try:
            if self._pending:
                table = _pairs_table(self._pending, self.replica)
                self.tables.append(PAIRS, table, self._pair_seq)
                self.written_rows += table.num_rows
                self._pending, self._rows, self._pair_seq = [], 0, {}
            if self._counts:
                self.tables.append(STATS, _stats_table(self._counts, self.replica),
                                   self._count_seq)
                self._counts, self._count_seq = Counter(), {}
        except Exception:  # noqa: BLE001 - keep serving; retry on the next flush
            self.write_errors += 1
            return False
        self._since = 0.0
        return True

    def close(self) -> None:
        """Write what is left (idempotent)."""
        if not self.closed:
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


def _stats_table(counts: Counter[DropKey], replica: str) -> pa.Table:
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
