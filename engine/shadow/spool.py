"""The shadow spool: a replica's mirrored requests on a per-node file, until they are logged.

A model-host replica appends one framed record (:mod:`engine.shadow.records`) per mirrored
request with a single ``write`` to the current segment of its spool — nothing else happens
on its serving loop. Its shadow worker reads the spool, predicts, writes the pair log to
Delta and only then acknowledges: records stay on the spool until they are committed, so
a SIGKILLed worker or replica loses nothing that was appended. Layout::

    <root>/<spool id>/lock                 flock'd by the owning replica while it lives
    <root>/<spool id>/000000000000.seg     records, appended; a new segment every ~1 MiB
    <root>/<spool id>/acked.json           the worker's position after its last commit
    <root>/<spool id>/worker.json          the worker's counters (see engine.shadow.worker)
    <root>/<spool id>/closed               the replica stopped appending (a clean stop)
    <root>/<spool id>/adopted/<spool id>/  spools of dead replicas this one took over

The root is per node (``/dev/shm`` by default: memory, never a disk stall). A spool whose
``lock`` nobody holds belongs to a dead replica; a new replica on the node adopts it
(:func:`adopt_orphans`: lock, then rename it below its own) and its worker resends what was
never acknowledged. Segments before the acknowledged one are deleted. The spool is bounded
(``max_bytes``): when full, appends fail at once and the mirror counts them ``dropped``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path

__all__ = ["SEGMENT_BYTES", "SPOOL_MAX_BYTES", "SpoolWriter", "adopt_orphans",
           "default_root", "segment_path", "segments", "try_lock"]

SEGMENT_BYTES = 1 << 20
SPOOL_MAX_BYTES = 64 << 20
FULL_RECHECK_S = 0.1  # a full spool looks again for reclaimed space this often
_SUFFIX = ".seg"


def default_root(registry_root: str, base_dir: str = "") -> Path:
    """This node's spool root for one registry, under ``base_dir`` (empty: ``/dev/shm`` when
    there is one, else the temp dir)."""
    if base_dir:
        base = Path(base_dir)
    else:
        base = (Path("/dev/shm") if os.access("/dev/shm", os.W_OK)
                else Path(tempfile.gettempdir()))
    key = hashlib.sha256(registry_root.encode()).hexdigest()[:16]
    return base / f"tenantry-shadow-{os.getuid()}" / key


def segment_path(spool: Path, index: int) -> Path:
    """The file of segment ``index``."""
    return spool / f"{index:012d}{_SUFFIX}"


def segments(spool: Path) -> list[int]:
    """Indexes of the spool's segment files, in order."""
    try:
        names = os.listdir(spool)
    except FileNotFoundError:
        return []
    return sorted(int(n[:-len(_SUFFIX)]) for n in names
                  if n.endswith(_SUFFIX) and n[:-len(_SUFFIX)].isdigit())


def try_lock(path: Path) -> int | None:
    """An fd holding an exclusive ``flock`` on ``path`` (created), or None if it is held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class SpoolWriter:
    """The replica's end: O(1) appends from one thread (the serving loop).

    Args:
        root: this node's spool root (see :func:`default_root`).
        max_bytes: bound on the segments not yet reclaimed; beyond it appends fail.
        segment_bytes: size at which a new segment is started.

    Raises:
        OSError: the spool directory cannot be created or locked.
    """

    def __init__(self, root: Path, max_bytes: int = SPOOL_MAX_BYTES,
                 segment_bytes: int = SEGMENT_BYTES) -> None:
        self.root = root
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path = root / self.id
        self._lock_fd: int | None = self._create()
        self.max_segments = max(2, max_bytes // segment_bytes)
        self.segment_bytes = segment_bytes
        self.seq = 0
        self.appended = 0
        self._index = 0
        self._size = 0
        self._fd = self._open(0)
        self._full_since = 0.0  # monotonic; 0: not full

    def _create(self) -> int:
        """Make and lock the spool under a hidden name, then show it: nobody can take it
        for an orphan between its creation and its lock. Returns the lock's fd."""
        hidden = self.root / f".{self.id}"
        for attempt in range(3):  # the root goes when its last spool closes
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                hidden.mkdir(mode=0o700)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        fd = try_lock(hidden / "lock")
        if fd is None:
            raise OSError(f"spool {hidden} is locked by another process")
        hidden.rename(self.path)
        return fd

    def _open(self, index: int) -> int:
        return os.open(segment_path(self.path, index),
                       os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def next_seq(self) -> int:
        """The sequence number of the next record."""
        self.seq += 1
        return self.seq

    def append(self, record: bytes, force: bool = False) -> bool:
        """Append one framed record with a single write; False (nothing written) when the
        spool is full or cannot be written. ``force``: past the bound (small records
        counting what was dropped, at most one a second)."""
        if not force and self._full_since and \
                time.monotonic() - self._full_since < FULL_RECHECK_S:
            return False
        if self._size + len(record) > self.segment_bytes and self._size and \
                not self._roll(force):
            return False
        self._full_since = 0.0
        try:
            written = os.write(self._fd, record)
        except OSError:
            written = -1
        if written != len(record):  # e.g. ENOSPC: a torn tail; later records go elsewhere
            self._size = self.segment_bytes
            return False
        self._size += written
        self.appended += 1
        return True

    def _roll(self, force: bool = False) -> bool:
        """Start the next segment unless the spool holds ``max_segments`` already."""
        if not force and len(segments(self.path)) >= self.max_segments:
            self._full_since = time.monotonic()
            return False
        fd = self._open(self._index + 1)
        os.close(self._fd)
        self._fd, self._index, self._size = fd, self._index + 1, 0
        return True

    def pending(self) -> bool:
        """Whether records (of this spool or adopted ones) wait to be acknowledged."""
        return _pending(self.path)

    def close(self) -> bool:
        """Stop appending; remove the spool when everything was acknowledged, else leave
        it (unlocked) for the next replica on this node to adopt. True if removed."""
        if self._lock_fd is None:
            return False
        with contextlib.suppress(OSError):
            os.close(self._fd)
        (self.path / "closed").touch()
        removed = not self.pending()
        if removed:
            shutil.rmtree(self.path, ignore_errors=True)
            with contextlib.suppress(OSError):
                self.root.rmdir()  # the last spool of this registry on the node
        os.close(self._lock_fd)
        self._lock_fd = None
        return removed


def _acked(spool: Path) -> tuple[int, int]:
    try:
        doc = json.loads((spool / "acked.json").read_text())
        return int(doc["segment"]), int(doc["offset"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1, 0


def _pending(spool: Path) -> bool:
    """Whether ``spool`` or a spool adopted into it has unacknowledged records."""
    segment, offset = _acked(spool)
    for index in segments(spool):
        size = segment_path(spool, index).stat().st_size
        if size and (index > segment or (index == segment and size > offset)):
            return True
    adopted = spool / "adopted"
    return adopted.is_dir() and any(_pending(p) for p in adopted.iterdir() if p.is_dir())


def adopt_orphans(root: Path, into: Path) -> list[str]:
    """Move every spool below ``root`` whose lock is free (its replica died) into
    ``into/adopted``, with the spools it had adopted itself; returns their ids."""
    taken: list[str] = []
    try:
        candidates = [p for p in root.iterdir()
                      if p.is_dir() and p != into and not p.name.startswith(".")]
    except FileNotFoundError:
        return taken
    for spool in candidates:
        if not (spool / "lock").exists():
            continue  # still being created
        fd = try_lock(spool / "lock")
        if fd is None:
            continue  # alive
        try:
            taken += _move(spool, into / "adopted")
        except FileNotFoundError:
            pass  # another replica took it first
        finally:
            os.close(fd)
    return taken


def _move(spool: Path, dest: Path) -> list[str]:
    dest.mkdir(exist_ok=True, mode=0o700)
    nested = spool / "adopted"
    moved = []
    if nested.is_dir():
        for inner in list(nested.iterdir()):
            inner.rename(dest / inner.name)
            moved.append(inner.name)
    spool.rename(dest / spool.name)
    return [spool.name, *moved]
