"""The shadow worker's end of a spool (see :mod:`engine.shadow.spool`): read in order from
the last acknowledged position, acknowledge after a commit, reclaim what was acknowledged.

A frame that is incomplete or fails its checksum at the end of the segment the replica
is still appending to may be a write in progress: the reader waits for it. Once the
segment is sealed — a later segment exists, or the replica is gone or stopped — such a
frame is a torn tail (a process killed mid-write, a full disk): the rest of the segment is
skipped and counted in ``corrupt``.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path

from engine.shadow.records import FRAME, MAX_BODY, BadRecord, Counts, PairRecord, decode
from engine.shadow.spool import segment_path, segments

__all__ = ["Position", "SpoolReader"]

Position = tuple[int, int]  # (segment, offset)


class SpoolReader:
    """Reads one spool directory.

    Args:
        path: the spool directory.
        adopted: the spool of a dead replica (sealed: nobody appends to it any more).
    """

    def __init__(self, path: Path, adopted: bool = False) -> None:
        self.path = path
        self.id = path.name
        self.adopted = adopted
        self.corrupt = 0
        self.acked = self._load_acked()
        self.position = self.acked

    def _load_acked(self) -> Position:
        try:
            doc = json.loads((self.path / "acked.json").read_text())
            return int(doc["segment"]), int(doc["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            found = segments(self.path)
            return (found[0] if found else 0), 0

    def _sealed(self, index: int) -> bool:
        return (self.adopted or (self.path / "closed").exists()
                or segment_path(self.path, index + 1).exists())

    def read(self, max_records: int) -> list[PairRecord | Counts]:
        """Up to ``max_records`` records after the current position (advances it)."""
        out: list[PairRecord | Counts] = []
        while len(out) < max_records:
            index, offset = self.position
            sealed = self._sealed(index)  # before reading: then the read sees every write
            try:
                with open(segment_path(self.path, index), "rb") as f:
                    f.seek(offset)
                    data = f.read()  # a segment is ~1 MiB
            except FileNotFoundError:
                data = b""
            used, bad = _frames(data, max_records - len(out), out)
            self.position = (index, offset + used)
            if len(out) >= max_records or (used and not bad):
                continue
            if not sealed:
                return out  # wait for the replica's next write
            if bad or (data and not used):
                self.corrupt += 1
            if not segment_path(self.path, index + 1).exists():
                return out  # the end of a sealed spool
            self.position = (index + 1, 0)
        return out

    def ack(self) -> None:
        """Record the current position as committed and delete the segments before it."""
        if self.position == self.acked:
            return
        tmp = self.path / "acked.json.tmp"
        tmp.write_text(json.dumps({"segment": self.position[0], "offset": self.position[1]}))
        os.replace(tmp, self.path / "acked.json")
        self.acked = self.position
        for index in segments(self.path):
            if index < self.acked[0]:
                segment_path(self.path, index).unlink(missing_ok=True)

    def finished(self) -> bool:
        """An adopted spool read and acknowledged to its end (it can be removed)."""
        if not self.adopted or self.position != self.acked:
            return False
        index, offset = self.acked
        found = segments(self.path)
        if found and found[-1] > index:
            return False
        path = segment_path(self.path, index)
        return not path.exists() or path.stat().st_size <= offset

    def remove(self) -> None:
        """Delete a finished adopted spool."""
        shutil.rmtree(self.path, ignore_errors=True)


def _frames(data: bytes, limit: int, out: list[PairRecord | Counts]) -> tuple[int, bool]:
    """Decode up to ``limit`` whole frames of ``data`` into ``out``; (bytes used, whether
    decoding stopped at a bad frame rather than at the end of the data)."""
    used = 0
    while limit and len(data) - used >= FRAME.size:
        length, crc = FRAME.unpack_from(data, used)
        if length > MAX_BODY:
            return used, True
        end = used + FRAME.size + length
        if end > len(data):
            return used, False  # incomplete: the rest may still come
        body = data[used + FRAME.size:end]
        if zlib.crc32(body) != crc:
            return used, True
        try:
            out.append(decode(body))
        except BadRecord:
            return used, True
        used, limit = end, limit - 1
    return used, False
