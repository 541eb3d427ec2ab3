"""LRU hit ratio for every cache size from one pass over a trace (Mattson stack distances).

For an access whose key was last seen at position j, its stack distance is the number
of distinct keys accessed since j. An LRU cache of C entries hits exactly when that
distance is < C, so one histogram of distances gives the hit ratio of every size at
once. Distinct keys since j are counted with a Fenwick tree holding a 1 at the latest
position of each key: O(n log n) for the whole curve.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["HitRatioCurve", "hit_ratio_curve", "simulate_lru", "stack_distances"]

COLD = -1  # distance of a first access (a compulsory miss at every size)


class _Fenwick:
    """Prefix sums over positions 0..n-1 with point updates."""

    def __init__(self, n: int) -> None:
        self._tree = [0] * (n + 1)
        self._n = n

    def add(self, pos: int, delta: int) -> None:
        i = pos + 1
        tree, n = self._tree, self._n
        while i <= n:
            tree[i] += delta
            i += i & -i

    def prefix(self, pos: int) -> int:
        """Sum over positions 0..pos-1."""
        total, tree, i = 0, self._tree, pos
        while i > 0:
            total += tree[i]
            i -= i & -i
        return total


def stack_distances(trace: Sequence[Hashable]) -> np.ndarray:
    """LRU stack distance of every access (``COLD`` for a key's first access).

    Args:
        trace: the sequence of accessed keys.

    Returns:
        int64 array, one distance per access.
    """
    n = len(trace)
    tree = _Fenwick(n)
    last: dict[Hashable, int] = {}
    out = np.empty(n, dtype=np.int64)
    live = 0  # number of distinct keys so far == tree.prefix(i)
    for i, key in enumerate(trace):
        j = last.get(key)
        if j is None:
            out[i] = COLD
            live += 1
        else:
            out[i] = live - tree.prefix(j + 1)  # latest positions strictly after j
            tree.add(j, -1)
        tree.add(i, 1)
        last[key] = i
    return out


@dataclass(frozen=True)
class HitRatioCurve:
    """Hit ratio of an LRU cache of every size 0..distinct_keys for one trace."""

    hits_by_size: np.ndarray  # hits_by_size[c] = hits of an LRU holding c entries
    accesses: int
    distinct_keys: int

    def hits(self, size: int) -> int:
        """Number of hits of a cache holding ``size`` entries (any size >= 0)."""
        size = max(0, min(int(size), len(self.hits_by_size) - 1))
        return int(self.hits_by_size[size])

    def hit_ratio(self, size: int) -> float:
        """Hit ratio of a cache holding ``size`` entries."""
        return self.hits(size) / self.accesses if self.accesses else 0.0

    def ratios(self) -> np.ndarray:
        """Hit ratio for sizes 0..distinct_keys."""
        return self.hits_by_size / max(1, self.accesses)

    def smallest_size_for(self, target: float) -> int | None:
        """Smallest cache size reaching ``target`` hit ratio, or None if no size does."""
        ok = np.nonzero(self.ratios() >= target - 1e-12)[0]
        return int(ok[0]) if len(ok) else None


def hit_ratio_curve(trace: Sequence[Hashable]) -> HitRatioCurve:
    """The LRU hit-ratio curve of ``trace`` (one pass).

    Args:
        trace: accessed keys in order.

    Returns:
        the curve for every size from 0 to the number of distinct keys.
    """
    dist = stack_distances(trace)
    warm = dist[dist != COLD]
    distinct = int(np.count_nonzero(dist == COLD))
    counts = np.bincount(warm, minlength=distinct + 1)[: distinct + 1]
    hits = np.concatenate([[0], np.cumsum(counts)[:distinct]]).astype(np.int64)
    return HitRatioCurve(hits_by_size=hits, accesses=len(dist), distinct_keys=distinct)


def simulate_lru(trace: Iterable[Hashable], size: int) -> int:
    """Brute-force LRU simulation (the reference the curve is tested against).

    Returns:
        number of hits of an LRU cache holding ``size`` entries.
    """
    from collections import OrderedDict

    cache: OrderedDict[Hashable, None] = OrderedDict()
    hits = 0
    for key in trace:
        if key in cache:
            hits += 1
            cache.move_to_end(key)
        elif size > 0:
            cache[key] = None
            if len(cache) > size:
                cache.popitem(last=False)
    return hits
