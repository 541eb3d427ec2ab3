"""Tenant id <-> dense tenant number, held in a few numpy arrays.

A Python ``dict[str, int]`` costs ~140 bytes a tenant (the table slot, the string object,
the int object); this index costs ~30: the ids concatenated in one ``bytes`` blob with
their offsets, and their hashes sorted beside the numbers they belong to. A lookup is one
``hash`` (cached on the string), one binary search in C and one ``bytes`` comparison, so
its cost does not grow with the tenant count in any way Python code can see.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np

__all__ = ["TenantIndex"]

_hash = hash  # a name of the module's own, so tests can make ids collide


class TenantIndex:
    """Numbers tenants ``0..n-1`` in the order they are first seen."""

    def __init__(self) -> None:
        self._blob = b""
        self._offsets = np.zeros(1, np.int64)
        # The hashes sorted, and the tenant number of each: one attribute, swapped whole, so
        # a reader in another thread never pairs new hashes with old numbers.
        self._sorted: tuple[np.ndarray, np.ndarray] = (np.empty(0, np.int64),
                                                       np.empty(0, np.int32))

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getstate__(self) -> dict[str, Any]:
        # str hashes are salted per process: an unpickled index hashes its ids again.
        return {"blob": self._blob, "offsets": self._offsets}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]  # start empty, then add the ids back in order
        blob, offsets = state["blob"], state["offsets"]
        self.numbers([blob[offsets[i]:offsets[i + 1]].decode() for i in range(len(offsets) - 1)])

    def name(self, number: int) -> str:
        """The tenant id numbered ``number``."""
        return self._blob[int(self._offsets[number]):int(self._offsets[number + 1])].decode()

    def names(self) -> list[str]:
        """Every tenant id, in number order."""
        return [self._blob[a:b].decode() for a, b in pairwise(self._offsets.tolist())]

    def find(self, tenant_id: str) -> int | None:
        """The number of ``tenant_id``, or None if it was never added."""
        h = _hash(tenant_id)
        hashes, numbers = self._sorted
        i = int(hashes.searchsorted(h))
        if i == len(hashes) or hashes[i] != h:
            return None
        key = tenant_id.encode()
        offsets = self._offsets
        while i < len(hashes) and hashes[i] == h:  # equal hashes: compare the ids
            number = int(numbers[i])
            if self._blob[int(offsets[number]):int(offsets[number + 1])] == key:
                return number
            i += 1
        return None

    def numbers(self, tenant_ids: Sequence[str]) -> np.ndarray:
        """The number of each id, numbering the ids not seen before (in order)."""
        unique = list(dict.fromkeys(tenant_ids))
        found = self._find_all(unique)
        new = [tid for tid, number in zip(unique, found.tolist(), strict=True) if number < 0]
        if new:
            found[found < 0] = np.arange(len(self), len(self) + len(new))
            self._append(new)
        by_id = dict(zip(unique, found.tolist(), strict=True))
        return np.fromiter((by_id[t] for t in tenant_ids), np.int64, len(tenant_ids))

    def _find_all(self, tenant_ids: list[str]) -> np.ndarray:
        """:meth:`find` of every id at once (-1: not added); one binary search in C."""
        hashes, numbers = self._sorted
        out = np.full(len(tenant_ids), -1, np.int64)
        if not len(hashes) or not tenant_ids:
            return out
        wanted = np.fromiter(map(_hash, tenant_ids), np.int64, len(tenant_ids))
        at = np.minimum(hashes.searchsorted(wanted), len(hashes) - 1)
        for i in np.flatnonzero(hashes[at] == wanted).tolist():  # equal hash: compare ids
            candidate = int(numbers[at[i]])
            # Another id with the same hash sorted first: look further along the run.
            number = candidate if self.name(candidate) == tenant_ids[i] \
                else self.find(tenant_ids[i])
            out[i] = -1 if number is None else number
        return out

    def _append(self, tenant_ids: list[str]) -> None:
        encoded = [t.encode() for t in tenant_ids]
        lengths = np.fromiter((len(e) for e in encoded), np.int64, len(encoded))
        self._offsets = np.concatenate([self._offsets, self._offsets[-1] + np.cumsum(lengths)])
        self._blob += b"".join(encoded)
        hashes = np.concatenate([self._sorted[0],
                                 np.fromiter((_hash(t) for t in tenant_ids), np.int64,
                                             len(tenant_ids))])
        first = len(self) - len(tenant_ids)
        numbers = np.concatenate([self._sorted[1],
                                  np.arange(first, len(self), dtype=np.int32)])
        order = np.argsort(hashes, kind="stable")
        self._sorted = (hashes[order], numbers[order])
