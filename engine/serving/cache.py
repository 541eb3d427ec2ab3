"""A byte-budget LRU of loaded models with single-flight asynchronous loading.

Policy and I/O are apart: :class:`BytesLRU` is cachetools' synchronous LRU sized by each
value's footprint, with ``popitem`` as its only eviction hook. :class:`ModelCache` adds
loading: one load per key at a time (concurrent misses share it), loads of different
keys in parallel, and cached keys never wait on a load. Everything runs on one event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from enum import Enum
from typing import Any, Generic, TypeVar

from cachetools import LRUCache

__all__ = ["BytesLRU", "Lookup", "ModelCache"]


class Lookup(str, Enum):
    """How a lookup was answered."""

    HIT = "hit"  # the value was cached
    COALESCED = "coalesced"  # another request was already loading it; this one waited
    MISS = "miss"  # this lookup started the load

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Loader = Callable[[Any], Awaitable[Any]]
EvictHook = Callable[[Any, Any], None]


class BytesLRU(LRUCache):  # type: ignore[type-arg]  # cachetools is untyped
    """cachetools LRU bounded by summed ``sizeof`` bytes; reports evictions."""

    def __init__(self, budget_bytes: int, sizeof: Callable[[Any], int],
                 on_evict: EvictHook | None = None) -> None:
        super().__init__(maxsize=max(1, budget_bytes), getsizeof=sizeof)
        self._on_evict = on_evict

    def popitem(self) -> tuple[Any, Any]:
        key, value = super().popitem()
        if self._on_evict is not None:
            self._on_evict(key, value)
        return key, value


class ModelCache(Generic[K, V]):
    """Get-or-load front of a :class:`BytesLRU` with per-key single flight."""

    def __init__(self, budget_bytes: int, loader: Loader, sizeof: Callable[[V], int],
                 on_evict: EvictHook | None = None) -> None:
        self._loader = loader
        self._sizeof = sizeof
        self._on_evict = on_evict
        self._lru = BytesLRU(budget_bytes, sizeof, on_evict)
        self._inflight: dict[K, asyncio.Future[V]] = {}

    @property
    def budget_bytes(self) -> int:
        """The byte budget."""
        return int(self._lru.maxsize)

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return int(self._lru.currsize)

    def __len__(self) -> int:
        return len(self._lru)

    def __contains__(self, key: object) -> bool:
        return key in self._lru

    def keys(self) -> list[K]:
        """Cached keys, least recently used first."""
        return list(self._lru.keys())

    def peek(self, key: K) -> V | None:
        """The cached value of ``key`` or None, never loading (a found key counts as used)."""
        return self._lru.get(key)  # type: ignore[no-any-return]  # cachetools is untyped

    async def get(self, key: K) -> tuple[V, Lookup]:
        """The value for ``key`` and how it was found; loads it on a miss.

        Raises:
            Whatever the loader raised (every waiter of that load sees the same error;
            nothing is cached, so the next request tries again).
        """
        try:
            return self._lru[key], Lookup.HIT
        except KeyError:
            pass
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending), Lookup.COALESCED
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value = await self._loader(key)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters may be none
            raise
        finally:
            del self._inflight[key]
        future.set_result(value)
        self.put(key, value)
        return value, Lookup.MISS

    def put(self, key: K, value: V) -> bool:
        """Insert ``value``; False if it alone exceeds the budget (then it is not kept)."""
        try:
            self._lru[key] = value
        except ValueError:  # larger than the whole budget
            return False
        return True

    def evict(self, key: K) -> bool:
        """Drop ``key`` (counted as an eviction); True if it was cached."""
        try:
            value = self._lru.pop(key)
        except KeyError:
            return False
        if self._on_evict is not None:
            self._on_evict(key, value)
        return True

    def evict_where(self, predicate: Callable[[K], bool]) -> int:
        """Drop every cached key for which ``predicate`` holds; returns how many."""
        doomed = [k for k in self._lru if predicate(k)]
        return sum(self.evict(k) for k in doomed)
