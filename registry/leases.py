"""Leases: a running run tells ``gc`` which files it still needs.

A lease is one small JSON file, ``leases/<run_id>.json`` below the registry root, written
in one atomic step (temp file + rename on disk, one PUT on an object store)::

    {"run_id", "holder", "expires_at", "ttl_s", "pins": {tenant: [version, …]}}

While a lease is live, ``gc`` keeps every claim and staged artifact of its run and every
version it pins (e.g. the production models a training run scores against), whatever
``--orphan-grace`` says. The holder renews it well inside its TTL (:class:`LeaseKeeper`,
a daemon thread) and deletes it when done; a holder that dies stops renewing, so its
lease lapses after the TTL and ``gc`` may collect what the run left.

Liveness allows for clock skew between holder and collector: a lease counts as live until
the later of its own ``expires_at`` and the file's modification time (the store's clock)
plus its TTL.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Self

from registry.errors import RegistryError
from registry.storage import ArtifactStore

__all__ = ["DEFAULT_RENEW_S", "DEFAULT_TTL_S", "LEASE_DIR", "Clock", "Lease", "LeaseKeeper",
           "LeaseStore"]

LEASE_DIR = "leases"
DEFAULT_TTL_S = 600.0
DEFAULT_RENEW_S = 30.0

Clock = Callable[[], float]
"""Wall-clock seconds since the epoch (``time.time``); injectable for tests."""


@dataclass(frozen=True)
class Lease:
    """One run's lease as read from the store."""

    run_id: str
    holder: str
    expires_at: float
    ttl_s: float
    pins: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    stored_at: float = 0.0  # file modification time by the store's clock (0: unknown)

    def live(self, now: float) -> bool:
        """True while ``gc`` must honour the lease."""
        return now < max(self.expires_at, self.stored_at + self.ttl_s)

    def to_json(self) -> dict[str, object]:
        """The file's JSON document."""
        return {"run_id": self.run_id, "holder": self.holder, "expires_at": self.expires_at,
                "ttl_s": self.ttl_s, "pins": {t: list(v) for t, v in self.pins.items()}}


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class LeaseStore:
    """Reads and writes the lease files of one registry."""

    def __init__(self, store: ArtifactStore, clock: Clock = time.time) -> None:
        self.store = store
        self.clock = clock

    @staticmethod
    def path(run_id: str) -> str:
        """The lease file of ``run_id``, relative to the root."""
        return f"{LEASE_DIR}/{run_id}.json"

    def write(self, run_id: str, ttl_s: float = DEFAULT_TTL_S,
              pins: Mapping[str, Iterable[int]] | None = None) -> Lease:
        """Take or renew the lease of ``run_id`` for ``ttl_s`` seconds from now.

        Args:
            run_id: a validated run id.
            ttl_s: seconds the lease stays live without another write.
            pins: versions per tenant ``gc`` must keep while the lease is live.

        Returns:
            The lease as written.
        """
        lease = Lease(run_id, _holder(), self.clock() + ttl_s, ttl_s,
                      {t: tuple(sorted(set(v))) for t, v in (pins or {}).items()})
        self.store.write(self.path(run_id), json.dumps(lease.to_json()).encode())
        return lease

    def release(self, run_id: str) -> None:
        """Delete the lease of ``run_id`` (missing is fine)."""
        self.store.delete(self.path(run_id))

    def read_all(self) -> list[Lease]:
        """Every lease file, live or not (unreadable files are skipped)."""
        leases = []
        for entry in self.store.walk(LEASE_DIR):
            if not entry.path.endswith(".json"):
                continue  # a temporary file of a write in progress
            try:
                doc = json.loads(self.store.read(entry.path))
                leases.append(Lease(
                    str(doc["run_id"]), str(doc.get("holder", "")), float(doc["expires_at"]),
                    float(doc.get("ttl_s", DEFAULT_TTL_S)),
                    {str(t): tuple(int(v) for v in vs) for t, vs in doc.get("pins", {}).items()},
                    entry.mtime))
            except (FileNotFoundError, ValueError, KeyError, TypeError):
                continue  # released while listing, or not a lease
        return leases

    def live(self, now: float | None = None) -> dict[str, Lease]:
        """run id -> lease, for every lease live at ``now`` (default: the clock)."""
        at = self.clock() if now is None else now
        return {lease.run_id: lease for lease in self.read_all() if lease.live(at)}

    def remove_expired(self, now: float | None = None) -> int:
        """Delete lease files that are no longer live; returns how many."""
        at = self.clock() if now is None else now
        gone = [lease for lease in self.read_all() if not lease.live(at)]
        for lease in gone:
            self.release(lease.run_id)
        return len(gone)


class LeaseKeeper:
    """Holds one run's lease: takes it, renews it on a daemon thread, releases it."""

    def __init__(self, leases: LeaseStore, run_id: str, ttl_s: float = DEFAULT_TTL_S,
                 renew_s: float = DEFAULT_RENEW_S) -> None:
        if renew_s >= ttl_s:
            raise ValueError("a lease must be renewed more often than it expires")
        self.leases = leases
        self.run_id = run_id
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self.renew_errors = 0
        self._pins: dict[str, set[int]] = {}
        self._lock = threading.Lock()  # one write at a time; release waits for a renewal
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Take the lease now (errors propagate) and start renewing it.

        Raises:
            RegistryError: the lease could not be written.
        """
        self._write()
        self._thread = threading.Thread(target=self._run, name=f"lease-{self.run_id}",
                                        daemon=True)
        self._thread.start()
        return self

    def pin(self, pins: Mapping[str, Iterable[int]]) -> None:
        """Add versions ``gc`` must keep while this run lasts, and write them at once."""
        with self._lock:
            for tenant, versions in pins.items():
                self._pins.setdefault(tenant, set()).update(versions)
        self._write()

    def _write(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            try:
                self.leases.write(self.run_id, self.ttl_s, self._pins)
            except OSError as exc:
                raise RegistryError(f"cannot write the lease of run {self.run_id}: {exc}") \
                    from exc

    def _run(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                self._write()
            except Exception:  # noqa: BLE001 - keep trying; the TTL covers several misses
                self.renew_errors += 1

    def stop(self, release: bool = True) -> None:
        """Stop renewing and (by default) delete the lease."""
        with self._lock:
            self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if release:
            self.leases.release(self.run_id)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
