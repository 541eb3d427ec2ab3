"""The spool's record format: a fixed ``struct`` header, then raw UTF-8 and array bytes.

Every record is one frame ``<length u32><crc32 u32><body>``; a body starts with its kind
(``PAIR`` or ``COUNTS``) and the spool's sequence number. A ``PAIR`` body then carries the
production and shadow versions, when production answered and how long it took, the
synthetic mark, the shapes, the tenant id and request id (UTF-8) and the request's rows
(float32) and production predictions (float64) as raw little-endian bytes. A ``COUNTS``
body is a JSON list of ``[tenant, shadow version, outcome, n]`` (mirrors that produced no
pair, e.g. dropped because the spool was full).

Nothing here parses text a client sent: records are written by a replica and read by its
own shadow worker. A frame whose length or checksum does not hold is refused
(:class:`BadRecord`), so a torn tail (a process killed mid-write, a full disk) is
recognised rather than misread.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = ["COUNTS", "FRAME", "PAIR", "BadRecord", "Counts", "PairRecord", "decode",
           "encode_counts", "encode_pair", "frame"]

FRAME = struct.Struct("<II")  # body length, crc32 of the body
_KIND = struct.Struct("<BQ")  # kind, seq
_PAIR = struct.Struct("<qqddBIIIHH")  # versions, at, latency, synthetic, rows, width, k, lens
PAIR, COUNTS = 1, 2
MAX_BODY = 64 << 20
DropKey = tuple[str, int, str]


class BadRecord(ValueError):
    """A frame or body that does not decode (torn, corrupted or of another format)."""


@dataclass(frozen=True, slots=True)
class PairRecord:
    """One mirrored production request, as the shadow worker reads it back."""

    seq: int
    tenant_id: str
    request_id: str
    production_version: int
    shadow_version: int
    at: float  # epoch seconds when production answered
    latency_s: float
    synthetic: bool
    x: np.ndarray  # (rows, width) float32
    predictions: np.ndarray  # (rows,) or (rows, K) float64


@dataclass(frozen=True, slots=True)
class Counts:
    """Mirrors without a pair, counted by the replica (logged to ``shadow/stats``)."""

    seq: int
    counts: dict[DropKey, int]


def frame(body: bytes) -> bytes:
    """``body`` framed with its length and checksum."""
    return FRAME.pack(len(body), zlib.crc32(body)) + body


def encode_pair(seq: int, tenant_id: str, request_id: str, production: int, shadow: int,
                at: float, latency_s: float, synthetic: bool, x: np.ndarray,
                predictions: np.ndarray) -> bytes:
    """One framed ``PAIR`` record (a few microseconds: packing and two array copies)."""
    xb = np.ascontiguousarray(x, dtype="<f4")
    pb = np.ascontiguousarray(predictions, dtype="<f8")
    rows, width = xb.shape
    k = int(pb.shape[1]) if pb.ndim == 2 else 1
    tb, rb = tenant_id.encode(), request_id.encode()[:1024]
    return frame(b"".join((_KIND.pack(PAIR, seq),
                           _PAIR.pack(production, shadow, at, latency_s, synthetic, rows,
                                      width, k, len(tb), len(rb)),
                           tb, rb, xb.tobytes(), pb.tobytes())))


def encode_counts(seq: int, counts: dict[DropKey, int]) -> bytes:
    """One framed ``COUNTS`` record."""
    doc = [[t, v, o, n] for (t, v, o), n in counts.items()]
    return frame(_KIND.pack(COUNTS, seq) + json.dumps(doc).encode())


def decode(body: bytes) -> PairRecord | Counts:
    """The record in ``body`` (a frame's checked body).

    Raises:
        BadRecord: not a record of this format.
    """
    try:
        kind, seq = _KIND.unpack_from(body)
        if kind == COUNTS:
            doc = json.loads(body[_KIND.size:])
            return Counts(seq, {(str(t), int(v), str(o)): int(n) for t, v, o, n in doc})
        if kind != PAIR:
            raise BadRecord(f"unknown record kind {kind}")
        (production, shadow, at, latency, synthetic, rows, width, k, lt,
         lr) = _PAIR.unpack_from(body, _KIND.size)
        o = _KIND.size + _PAIR.size
        tenant, request_id = body[o:o + lt].decode(), body[o + lt:o + lt + lr].decode()
        o += lt + lr
        xn, pn = rows * width * 4, rows * k * 8
        if len(body) != o + xn + pn:
            raise BadRecord(f"record of {len(body)} bytes, its shapes need {o + xn + pn}")
        x = np.frombuffer(body, "<f4", rows * width, o).reshape(rows, width)
        p = np.frombuffer(body, "<f8", rows * k, o + xn)
        return PairRecord(seq, tenant, request_id, production, shadow, at, latency,
                          bool(synthetic), x, p if k == 1 else p.reshape(rows, k))
    except BadRecord:
        raise
    except (struct.error, ValueError, TypeError) as exc:
        raise BadRecord(f"undecodable record: {exc}") from exc
