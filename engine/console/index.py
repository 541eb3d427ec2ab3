"""The console's in-memory tenant index: built from a :class:`RegistrySnapshot`, never from
a Delta read per request.

A refresher (a daemon thread, or a direct call) refreshes the snapshot -- which reads only
the rows committed since its last refresh (Delta change data feed) -- and, when anything
changed, swaps in a new immutable :class:`IndexView`. Requests read whatever view is
current without a lock: a page is a filter and a slice of a list already sorted for that
sort key (sorted orders are cached per view), so serving one costs a few milliseconds at
10,000 tenants.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from registry.errors import UnknownTenant
from registry.snapshot import RegistrySnapshot
from registry.types import Alias, ModelVersion

__all__ = ["SORT_KEYS", "IndexView", "Page", "TenantEntry", "TenantIndex", "TenantRow"]

MAX_PER_PAGE = 500


@dataclass(frozen=True, slots=True)
class TenantRow:
    """One line of the tenants page."""

    tenant_id: str
    shard: int
    production: int | None
    shadow: int | None
    latest: int
    versions: int
    auc: float | None  # of the production version (else the latest)
    logloss: float | None
    trained_at: datetime | None  # when the latest version was published
    data_date: str | None


@dataclass(frozen=True, slots=True)
class TenantEntry:
    """Everything the index holds about one tenant (immutable)."""

    row: TenantRow
    versions: tuple[ModelVersion, ...]  # newest first
    production_stack: tuple[int, ...]  # oldest first; the last is current
    shadow_stack: tuple[int, ...]


def _none_last(value: Any) -> tuple[bool, Any]:
    return (value is None, value)


SORT_KEYS: dict[str, Callable[[TenantRow], Any]] = {
    "tenant": lambda r: r.tenant_id,
    "shard": lambda r: (r.shard, r.tenant_id),
    "production": lambda r: _none_last(r.production),
    "latest": lambda r: r.latest,
    "versions": lambda r: r.versions,
    "auc": lambda r: _none_last(r.auc),
    "logloss": lambda r: _none_last(r.logloss),
    "trained": lambda r: _none_last(r.trained_at),
}
"""The columns the tenants page sorts by."""


@dataclass(frozen=True)
class Page:
    """One page of the tenants table."""

    rows: tuple[TenantRow, ...]
    total: int  # tenants matching the search
    page: int  # 1-based
    pages: int
    per_page: int
    q: str
    sort: str
    desc: bool
    tenants: int  # tenants in the registry


@dataclass
class IndexView:
    """One immutable generation of the index (plus its lazily cached sort orders)."""

    entries: Mapping[str, TenantEntry]
    generation: int
    built_at: float  # wall-clock seconds
    build_seconds: float
    _orders: dict[tuple[str, bool], tuple[TenantRow, ...]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def ordered(self, sort: str, desc: bool) -> tuple[TenantRow, ...]:
        """Every row sorted by ``sort`` (computed once per view and key)."""
        key = (sort, desc)
        rows = self._orders.get(key)
        if rows is None:
            with self._lock:
                rows = self._orders.get(key)
                if rows is None:
                    rows = tuple(sorted((e.row for e in self.entries.values()),
                                        key=SORT_KEYS[sort], reverse=desc))
                    self._orders[key] = rows
        return rows


def _entry(snap: RegistrySnapshot, tenant_id: str) -> TenantEntry:
    versions = tuple(snap.versions(tenant_id))
    prod = snap.alias_stack(tenant_id, Alias.PRODUCTION).versions
    shadow = snap.alias_stack(tenant_id, Alias.SHADOW).versions
    by_v = {m.version: m for m in versions}
    shown = by_v.get(prod[-1]) if prod else None
    shown = shown or versions[0]
    latest = versions[0]
    row = TenantRow(tenant_id, latest.shard, prod[-1] if prod else None,
                    shadow[-1] if shadow else None, latest.version, len(versions),
                    _metric(shown, "auc"), _metric(shown, "logloss"), latest.created_at,
                    latest.data_date)
    return TenantEntry(row, versions, tuple(prod), tuple(shadow))


def _metric(mv: ModelVersion, name: str) -> float | None:
    value = mv.metrics.get(name)
    return float(value) if isinstance(value, int | float) else None


class TenantIndex:
    """Tenant rows for the console, following a snapshot; pages served from memory."""

    def __init__(self, snapshot: RegistrySnapshot, refresh_s: float = 1.0,
                 on_error: Callable[[Exception], None] | None = None,
                 lock: threading.Lock | None = None) -> None:
        """Follow ``snapshot``.

        Args:
            snapshot: the snapshot to follow (it may be shared with a writer that holds
                ``lock`` while it refreshes it too).
            refresh_s: seconds between refreshes on the refresher thread.
            on_error: told about a failed refresh (the last view keeps being served).
            lock: held while refreshing the snapshot; page reads never take it.
        """
        self._snapshot = snapshot
        self.refresh_s = refresh_s
        self._on_error = on_error
        self._lock = lock or threading.Lock()
        self._view = IndexView({}, -1, 0.0, 0.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    @property
    def view(self) -> IndexView:
        """The current generation."""
        return self._view

    def refresh(self) -> bool:
        """Follow the registry; True when a new view was built.

        Raises:
            RegistryError: the index could not be read (the last view stays).
        """
        with self._lock:
            self._snapshot.refresh()
            # by generation, not refresh()'s answer: a writer sharing the snapshot may
            # have refreshed it already
            if self._snapshot.generation == self._view.generation:
                return False
            started = time.perf_counter()
            snap = self._snapshot
            entries = {tid: _entry(snap, tid) for tid in snap.tenants()}
            self._view = IndexView(entries, snap.generation, time.time(),
                                   time.perf_counter() - started)
            return True

    def page(self, q: str = "", sort: str = "tenant", desc: bool = False, page: int = 1,
             per_page: int = 50) -> Page:
        """One page of tenants whose id contains ``q`` (case-insensitive), sorted."""
        view = self._view
        sort = sort if sort in SORT_KEYS else "tenant"
        per_page = max(1, min(int(per_page), MAX_PER_PAGE))
        rows = view.ordered(sort, desc)
        needle = q.strip().lower()
        if needle:
            rows = tuple(r for r in rows if needle in r.tenant_id.lower())
        pages = max(1, -(-len(rows) // per_page))
        page = max(1, min(int(page), pages))
        start = (page - 1) * per_page
        return Page(rows[start:start + per_page], len(rows), page, pages, per_page, q, sort,
                    desc, len(view.entries))

    def tenant(self, tenant_id: str) -> TenantEntry:
        """One tenant's entry.

        Raises:
            UnknownTenant: no such tenant (as of the current view).
        """
        entry = self._view.entries.get(tenant_id)
        if entry is None:
            raise UnknownTenant(f"unknown tenant {tenant_id!r}")
        return entry

    # -- the refresher thread ---------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - keep serving the last good view
                self.errors += 1
                if self._on_error is not None:
                    self._on_error(exc)

    def start(self) -> None:
        """Refresh every ``refresh_s`` seconds on a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="tenantry-console-index")
            self._thread.start()

    def stop(self) -> None:
        """Stop the refresher (waits briefly)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
