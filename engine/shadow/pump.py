"""The shadow worker's loop: read the spools, predict, commit the pair log, acknowledge.

One :class:`Pump` per worker, on one thread of the worker's process: it reads the
replica's spool and the spools it adopted (``adopted/*``; it looks for orphans on the node
every second), hands the records to
its :class:`~engine.shadow.worker.ShadowWorker`, and when the pair log is due flushes it
to Delta and only then acknowledges the spools (so a record is never reclaimed before its
pair is committed). Records the pair log already holds (sent again after a restart) are
recognised by the spool's high-water mark in Delta (:meth:`PairLog.high_water`).

After its batches it writes ``worker.json`` in the replica's spool (at most every
``PUBLISH_S``; an idle pump still steps every ``IDLE_S``, so the last counts follow): its
pid and its counters (outcomes, the absolute-difference histogram), cumulative across its restarts,
which the replica reads when scraped (:class:`engine.metrics.Metrics`). A batch that
hangs longer than ``max_age_s`` on one record writes it to ``poison.json`` before the
worker is replaced (:meth:`Pump.hung`); the next worker counts that record as a timeout.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from engine.metrics import DIFF_BUCKETS
from engine.shadow.records import Counts, PairRecord
from engine.shadow.spool import adopt_orphans
from engine.shadow.spool_reader import SpoolReader
from engine.shadow.worker import ShadowWorker

__all__ = ["Pump", "read_totals"]

MAX_BATCH = 512  # records per batch
BUFFER_LIMIT = 200_000  # buffered pair rows beyond which reading pauses (writes failing)
IDLE_S = 0.2  # sleep when the spools had nothing new: records wait up to this long,
# so a batch holds more of each tenant's records (one prediction each): with a hot tenant,
# 43 -> 34 us of CPU per pair against 0.05 s
DISCOVER_S = 1.0  # how often to look for newly adopted spools
PUBLISH_S = 1.0  # worker.json at most this often (its readers: /metrics scrapes, the stats
# route, both expected to lag a few seconds)


def read_totals(spool: Path) -> dict[str, Any]:
    """The worker's last ``worker.json`` in ``spool`` ({} before its first batch)."""
    try:
        doc = json.loads((spool / "worker.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


class Pump:
    """Moves records from a replica's spools through a worker into the pair log."""

    def __init__(self, worker: ShadowWorker, spool: Path, max_age_s: float = 10.0) -> None:
        self.worker = worker
        self.spool = spool
        self.max_age_s = max_age_s
        self.readers: dict[str, SpoolReader] = {}
        self._hw: dict[str, tuple[int, int]] = {}
        prev = read_totals(spool)
        self.outcomes: Counter[str] = Counter(prev.get("outcomes", {}))
        self.buckets = np.zeros(len(DIFF_BUCKETS) + 1, np.int64)
        if len(prev.get("diff_buckets", [])) == len(self.buckets):
            self.buckets += np.asarray(prev["diff_buckets"], np.int64)
        self.diff_sum = float(prev.get("diff_sum", 0.0))
        worker.last_error = str(prev.get("last_error", ""))
        self.poison: dict[str, list[int]] = self._load_poison()  # spool -> seqs
        self.stopped = False
        self._discovered = 0.0
        self._published = 0.0  # monotonic time of the last worker.json
        self._unpublished = False  # batches processed since
        self._lock = threading.Lock()  # one step at a time (the drain runs steps too)

    def _load_poison(self) -> dict[str, list[int]]:
        """spool -> seqs of records a hung worker was predicting (``poison.json``)."""
        try:
            doc = json.loads((self.spool / "poison.json").read_text())
            return {str(k): [int(seq) for seq in v] for k, v in doc.items()}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}

    def _discover(self) -> None:
        if time.monotonic() - self._discovered < DISCOVER_S and self.readers:
            return
        self._discovered = time.monotonic()
        # Spools of replicas that died on this node since this one started are taken over
        # too (not only at start): their replacement may run on another node.
        adopt_orphans(self.spool.parent, self.spool)
        paths = [(self.spool, False)]
        adopted = self.spool / "adopted"
        if adopted.is_dir():
            paths += [(p, True) for p in sorted(adopted.iterdir()) if p.is_dir()]
        for path, is_adopted in paths:
            if path.name not in self.readers:
                self.readers[path.name] = SpoolReader(path, is_adopted)
                self._hw[path.name] = self.worker.log.high_water(path.name)

    def step(self, wait_s: float = -1) -> int:
        """Read and process one batch per spool, commit when due; records read (0 also
        when another step held the pump for longer than ``wait_s``)."""
        if not self._lock.acquire(timeout=wait_s):
            return 0
        try:
            if self.stopped:
                return 0
            self._discover()
            read = 0
            for reader in list(self.readers.values()):
                if self.worker.log.buffered_rows >= BUFFER_LIMIT:
                    break
                records = reader.read(MAX_BATCH)
                read += len(records)
                if records:
                    self._batch(reader.id, records)
            if self.worker.log.due() or (read and not self.worker.log.pending):
                self.commit()  # nothing to write (synthetic traffic): acknowledge at once
            self._unpublished |= bool(read)
            if self._unpublished and time.monotonic() - self._published >= PUBLISH_S:
                self.publish()  # at most every PUBLISH_S (run() steps again within IDLE_S)
            return read
        finally:
            self._lock.release()

    def _batch(self, spool_id: str, records: list[PairRecord | Counts]) -> None:
        pairs_hw, stats_hw = self._hw[spool_id]
        log = self.worker.log
        poison = frozenset(self.poison.get(spool_id, ()))
        pairs: list[PairRecord] = []
        for rec in records:
            if isinstance(rec, Counts):
                for (tenant, version, outcome), n in rec.counts.items():
                    if rec.seq > stats_hw:
                        log.count(tenant, version, outcome, n, spool_id, rec.seq)
            elif rec.seq in poison:
                self.outcomes["timeout"] += 1
                if not rec.synthetic and rec.seq > stats_hw:
                    log.count(rec.tenant_id, rec.shadow_version, "timeout", 1, spool_id,
                              rec.seq)
            else:
                pairs.append(rec)
        if not pairs:
            return
        result = self.worker.process(pairs, spool_id, pairs_hw)
        self.outcomes.update(result.outcomes)
        if len(result.abs_diffs):
            self.buckets += np.bincount(np.searchsorted(DIFF_BUCKETS, result.abs_diffs),
                                        minlength=len(self.buckets))
            self.diff_sum += float(result.abs_diffs.sum())

    def commit(self) -> bool:
        """Flush the pair log; once committed, acknowledge every spool read so far."""
        if self.stopped or not self.worker.log.flush():
            return False
        for spool_id, reader in list(self.readers.items()):
            reader.ack()
            if reader.finished():
                reader.remove()
                del self.readers[spool_id]
        return True

    def publish(self) -> None:
        """Write ``worker.json`` (the replica's metrics and stats read it)."""
        doc = {**self.worker.stats(), "outcomes": dict(self.outcomes),
               "diff_buckets": self.buckets.tolist(), "diff_sum": self.diff_sum,
               "last_error": self.worker.last_error, "spools": len(self.readers),
               "corrupt": sum(r.corrupt for r in self.readers.values()),
               "updated": time.time()}
        self._published, self._unpublished = time.monotonic(), False
        try:
            _write_json(self.spool / "worker.json", doc)
        except OSError:
            pass  # the spool was removed (the replica stopped)

    def hung(self) -> bool:
        """Whether one group of records has been predicted for longer than ``max_age_s``;
        if so, record its first record in ``poison.json`` (the next worker counts it as a
        timeout and tries the others again) and stop this pump."""
        busy = self.worker.current
        if busy is None or time.monotonic() - busy[2] <= self.max_age_s:
            return False
        self.stopped = True
        self.poison[busy[0]] = sorted({*self.poison.get(busy[0], ()), busy[1]})
        _write_json(self.spool / "poison.json", self.poison)
        self.worker.last_error = (f"shadow worker busy with one batch for over "
                                  f"{self.max_age_s:g}s: restarted")
        self.publish()
        return True

    def drain(self, timeout_s: float) -> bool:
        """Read every spool to its end and commit (a clean stop); True if all committed."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if self.step(left):
                continue
            if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return False  # a batch still hangs
            try:
                done = self.commit()
            finally:
                self._lock.release()
            self.publish()
            if done:
                return True
            time.sleep(IDLE_S)
        return False

    def run(self, stop: threading.Event) -> None:
        """Step until ``stop`` is set or the pump is stopped."""
        while not stop.is_set() and not self.stopped:
            try:
                read = self.step()
            except Exception as exc:  # noqa: BLE001 - keep pumping; the spool keeps records
                self.worker.last_error = f"shadow pump: {type(exc).__name__}: {exc}"[:500]
                read = 0
            if not read:
                stop.wait(IDLE_S)
