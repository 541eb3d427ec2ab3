"""The shadow spool: append, read, acknowledge, reclaim, bound, adoption, torn tails."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from engine.shadow.records import BadRecord, Counts, PairRecord, decode, encode_counts, encode_pair
from engine.shadow.spool import SpoolWriter, adopt_orphans, segment_path, segments, try_lock
from engine.shadow.spool_reader import SpoolReader


def _pair(w: SpoolWriter, i: int, rows: int = 2) -> bytes:
    x = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3) + i
    return encode_pair(w.next_seq(), "acme", f"req-{i}", 1, 2, 1.7e9 + i, 0.001, False, x,
                       np.full(rows, i / 100.0))


def test_records_round_trip_and_refuse_garbage() -> None:
    x = np.array([[1.0, np.nan]], np.float32)
    body = encode_pair(7, "acme", "r1", 1, 2, 1.5, 0.002, True, x, np.array([[0.1, 0.9]]))[8:]
    rec = decode(body)
    assert isinstance(rec, PairRecord) and rec.seq == 7 and rec.synthetic
    assert (rec.tenant_id, rec.request_id, rec.production_version, rec.shadow_version) == \
        ("acme", "r1", 1, 2)
    np.testing.assert_array_equal(rec.x, x)
    assert rec.predictions.shape == (1, 2)
    counts = decode(encode_counts(8, {("acme", 2, "dropped"): 3})[8:])
    assert isinstance(counts, Counts) and counts.counts == {("acme", 2, "dropped"): 3}
    with pytest.raises(BadRecord):
        decode(body[:-3])
    with pytest.raises(BadRecord):
        decode(b"\x09" + body[1:])


def test_append_read_ack_and_reclaim(tmp_path: Path) -> None:
    w = SpoolWriter(tmp_path, max_bytes=1 << 20, segment_bytes=400)
    for i in range(10):
        assert w.append(_pair(w, i))
    assert len(segments(w.path)) > 2  # rolled over
    r = SpoolReader(w.path)
    got = r.read(4) + r.read(100)
    assert [g.request_id for g in got if isinstance(g, PairRecord)] == \
        [f"req-{i}" for i in range(10)]
    assert w.pending()
    r.ack()
    assert segments(w.path) == segments(w.path)[-1:]  # only the current segment is left
    assert not w.pending()
    assert w.append(_pair(w, 10))
    again = SpoolReader(w.path)  # a restarted worker resumes after the acknowledged ones
    assert [g.request_id for g in again.read(100)] == ["req-10"]  # type: ignore[union-attr]
    assert not w.close()  # req-10 was never acknowledged: left for adoption
    assert w.path.exists()


def test_unacknowledged_records_are_read_again(tmp_path: Path) -> None:
    w = SpoolWriter(tmp_path)
    for i in range(3):
        w.append(_pair(w, i))
    assert len(SpoolReader(w.path).read(10)) == 3  # read, never acknowledged (worker died)
    assert len(SpoolReader(w.path).read(10)) == 3


def test_full_spool_refuses_at_once_and_frees_after_ack(tmp_path: Path) -> None:
    w = SpoolWriter(tmp_path, max_bytes=800, segment_bytes=400)
    results = [w.append(_pair(w, i)) for i in range(20)]
    assert results[0] and not results[-1]
    written = sum(results)
    r = SpoolReader(w.path)
    assert len(r.read(100)) == written
    r.ack()
    w._full_since -= 1.0  # the full spool looks for reclaimed space again
    assert w.append(_pair(w, 99))


def test_torn_tail_is_skipped_once_sealed(tmp_path: Path) -> None:
    w = SpoolWriter(tmp_path)
    w.append(_pair(w, 0))
    good = _pair(w, 1)
    w.append(good)
    with open(segment_path(w.path, 0), "ab") as f:
        f.write(good[: len(good) // 2])  # a write cut short by a kill
    r = SpoolReader(w.path)
    assert len(r.read(10)) == 2
    assert r.read(10) == [] and r.corrupt == 0  # the replica may still be writing it
    flipped = bytearray(_pair(w, 2))
    flipped[-1] ^= 0xFF  # a checksum that does not hold, in a later segment
    with open(segment_path(w.path, 1), "wb") as f:
        f.write(_pair(w, 3) + bytes(flipped))
    got = r.read(10)
    assert [g.request_id for g in got] == ["req-3"]  # type: ignore[union-attr]
    assert r.corrupt == 1
    (w.path / "closed").touch()
    assert r.read(10) == [] and r.corrupt == 2


def test_orphaned_spools_are_adopted_once_live_ones_never(tmp_path: Path) -> None:
    root = tmp_path / "spools"
    dead, live = SpoolWriter(root), SpoolWriter(root)
    dead.append(_pair(dead, 0))
    os.close(dead._lock_fd)  # type: ignore[arg-type]  # the replica died: its lock is free
    dead._lock_fd = None
    me = SpoolWriter(root)
    assert adopt_orphans(root, me.path) == [dead.id]
    adopted = me.path / "adopted" / dead.id
    assert adopted.is_dir() and not dead.path.exists() and live.path.exists()
    other = SpoolWriter(root)
    assert adopt_orphans(root, other.path) == []  # taken already; live and me are locked
    r = SpoolReader(adopted, adopted=True)
    assert [g.request_id for g in r.read(10)] == ["req-0"]  # type: ignore[union-attr]
    assert me.pending()
    r.ack()
    assert r.finished()
    r.remove()
    assert not me.pending() and me.close() and not me.path.exists()
    assert root.exists()  # other spools are left in it
    fd = try_lock(live.path / "lock")
    assert fd is None
