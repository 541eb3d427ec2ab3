"""A compiled forest saved beside its artifact at publish time, so loading skips compiling.

Compiling an artifact (:func:`~engine.forest.compiled.compile_forest`) parses every tree in
Python: ~0.25 ms for 50 trees, most of what a batch job spends per tenant. The training
job's publish check compiles each artifact anyway; it also saves the result as
:data:`SAVED_NAME` in the version's directory (ahead-of-time compilation, as Treelite or
SageMaker Neo do), and a load reads that instead (~25 us).

Format: one Arrow IPC stream (read by pyarrow, no pickle) with one record batch of the
node arrays (``feature``, ``threshold``, ``left``, ``value``, and ``root`` flags marking
each tree's first node) and the scalars, feature names (JSON), the compiler version, the
artifact's sha256 and a crc32 of the arrays in its schema metadata. The file is derived,
never the source of truth: one that is missing, of another compiler version, made from
other artifact bytes, or damaged (crc, types, index ranges) is refused
(:class:`SavedForestInvalid`), and the caller compiles the artifact instead.
"""

from __future__ import annotations

import json
import zlib

import numpy as np
import pyarrow as pa

from engine.forest.compiled import FOREST_VERSION, CompiledForest

__all__ = ["SAVED_NAME", "SavedForestInvalid", "dump_forest", "load_saved_forest"]

SAVED_NAME = f"forest-v{FOREST_VERSION}.arrow"
"""The file's name in the version directory (the compiler version is part of it)."""

_SCHEMA = pa.schema([("feature", pa.int32()), ("threshold", pa.float32()),
                     ("left", pa.int32()), ("value", pa.float32()), ("root", pa.bool_())])
_META = ("compiler", "sha256", "crc32", "n_features", "depth", "sigmoid", "names_stored",
         "base_margin", "objective", "names")


class SavedForestInvalid(ValueError):
    """The saved forest cannot be used for this artifact; compile the artifact instead."""


def _crc(arrays: list[np.ndarray]) -> int:
    crc = 0
    for a in arrays:
        crc = zlib.crc32(a.tobytes(), crc)
    return crc


def dump_forest(forest: CompiledForest, sha256: str) -> bytes:
    """The saved form of ``forest``, compiled from the artifact whose sha256 is ``sha256``.

    Args:
        forest: the compiled forest.
        sha256: hex sha256 of the artifact bytes it was compiled from.

    Returns:
        The file's bytes.
    """
    root = np.zeros(forest.left.size, np.bool_)
    root[forest.roots] = True
    arrays = [forest.feature.astype(np.int32), forest.threshold.astype(np.float32),
              forest.left.astype(np.int32), forest.value.astype(np.float32), root]
    meta = {"compiler": FOREST_VERSION, "sha256": sha256, "crc32": str(_crc(arrays)),
            "n_features": str(forest.n_features), "depth": str(forest.depth),
            "sigmoid": str(int(forest.sigmoid)), "names_stored": str(int(forest.names_stored)),
            "base_margin": str(int(np.float32(forest.base_margin).view(np.uint32))),
            "objective": forest.objective, "names": json.dumps(list(forest.feature_names))}
    batch = pa.record_batch(arrays, schema=_SCHEMA.with_metadata(meta))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return bytes(sink.getvalue().to_pybytes())


def load_saved_forest(data: bytes, sha256: str) -> CompiledForest:
    """The forest saved in ``data``, if it was compiled by this compiler from ``sha256``.

    Args:
        data: the saved file's bytes.
        sha256: hex sha256 of the artifact the index row names.

    Returns:
        The compiled forest, equal to compiling the artifact.

    Raises:
        SavedForestInvalid: not a saved forest of this compiler for that artifact, or damaged.
    """
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(data))
        if not reader.schema.remove_metadata().equals(_SCHEMA):
            raise SavedForestInvalid("not the saved forest's columns")
        batch = reader.read_next_batch()
        meta = {k.decode(): v.decode() for k, v in (reader.schema.metadata or {}).items()}
        if meta.get("compiler") != FOREST_VERSION:
            raise SavedForestInvalid(f"saved by compiler {meta.get('compiler')!r}")
        if meta.get("sha256") != sha256:
            raise SavedForestInvalid("saved from other artifact bytes")
        arrays = [batch.column(i).to_numpy(zero_copy_only=False) for i in range(5)]
        return _forest(meta, arrays)
    except SavedForestInvalid:
        raise
    except (pa.ArrowException, OSError, ValueError, KeyError, TypeError, OverflowError) as exc:
        raise SavedForestInvalid(f"not a saved forest: {exc!r}") from exc


def _forest(meta: dict[str, str], arrays: list[np.ndarray]) -> CompiledForest:
    """Check the arrays (crc, index ranges) and build the forest from them."""
    if any(k not in meta for k in _META) or any(a.ndim != 1 for a in arrays):
        raise SavedForestInvalid("incomplete metadata")
    if _crc(arrays) != int(meta["crc32"]):
        raise SavedForestInvalid("crc32 of the node arrays does not match")
    feature, threshold, left, value, root = arrays
    nf, size, depth = int(meta["n_features"]), left.size, int(meta["depth"])
    names = tuple(json.loads(meta["names"]))
    roots = np.flatnonzero(root).astype(np.int32)
    if (size == 0 or roots.size == 0 or len(names) != nf
            or not all(isinstance(n, str) for n in names)
            or left.min() < 0 or left.max() >= size
            or feature.min() < 0 or feature.max() >= 2 * nf or not 0 <= depth <= size):
        raise SavedForestInvalid("node indices out of range")
    base = np.array([int(meta["base_margin"])], np.uint32).view(np.float32)[0]
    nbytes = roots.nbytes + feature.nbytes + threshold.nbytes + left.nbytes + value.nbytes
    return CompiledForest(nf, names, nbytes, meta["sigmoid"] == "1", base, depth, roots,
                          feature, threshold, left, value,
                          names_stored=meta["names_stored"] == "1", objective=meta["objective"])
