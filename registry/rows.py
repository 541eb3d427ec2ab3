"""One ``models`` index row as a :class:`ModelVersion` (the reference decoding).

The snapshot stores most rows in columns (:mod:`registry.version_table`) and builds the
same value from them; rows it cannot store compactly are decoded here.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping

from registry.types import ModelVersion

__all__ = ["NO_CATEGORIES", "categories_of", "float_free", "resolve_uri", "row_to_version"]

# Shared by every row without categorical features (never mutated). A plain dict: a
# ModelVersion is pickled (Ray tasks, actors), which a mappingproxy cannot be.
NO_CATEGORIES: Mapping[str, tuple[str, ...]] = {}


def resolve_uri(root_uri: str | None, uri: str) -> str:
    """An index row's artifact location as a URI users can open.

    Rows record artifacts relative to the registry root (so a copied or moved registry
    reads only its own files); older rows hold absolute URIs, which are returned as they
    are (and refused at read time when outside the root).
    """
    if root_uri is None or "://" in uri or posixpath.isabs(uri):
        return uri
    return posixpath.join(root_uri, uri)


def row_to_version(row: dict, root_uri: str | None = None) -> ModelVersion:
    """Build a :class:`ModelVersion` from a ``models`` index row.

    Rows written before objectives were recorded (null ``objective``, ``num_class``,
    ``feature_types``) read as binary:logistic models with float features; rows written
    before publish-time forest checks have no ``forest_check`` (None).

    Args:
        row: the index row.
        root_uri: the registry root a relative ``artifact_uri`` is resolved against.
    """
    metrics = json.loads(row.get("metrics_json") or "{}")
    names = tuple(row.get("feature_names") or ())
    types = tuple(row.get("feature_types") or ())
    return ModelVersion(
        tenant_id=row["tenant_id"],
        shard=int(row["shard"]),
        version=int(row["version"]),
        artifact_uri=resolve_uri(root_uri, row["artifact_uri"]),
        sha256=row["sha256"],
        size_bytes=int(row["size_bytes"]),
        feature_names=names,
        metrics=metrics,
        run_id=row["run_id"],
        created_at=row["created_at"],
        data_date=row.get("data_date"),
        objective=row.get("objective") or "binary:logistic",
        num_class=int(row["num_class"]) if row.get("num_class") is not None else None,
        feature_types=float_free(names, types),
        categories=categories_of(row.get("params_json"), names, types),
        forest_check=row.get("forest_check"),
    )


def float_free(names: tuple[str, ...], types: tuple[str, ...]) -> tuple[str, ...]:
    """The feature types a version keeps: () when every feature is a float (the default)."""
    return types if len(types) == len(names) and "categorical" in types else ()


def categories_of(params_json: str | None, names: tuple[str, ...],
                  types: tuple[str, ...]) -> Mapping[str, tuple[str, ...]]:
    """Per categorical feature, its categories as the row's ``params_json`` records them.

    Rows without params (or params that do not parse) have none: the model's own
    categories are used at load time.
    """
    if "categorical" not in types or not params_json:
        return NO_CATEGORIES
    try:
        cats = json.loads(params_json).get("categories") or {}
    except (ValueError, AttributeError):
        return NO_CATEGORIES
    if not isinstance(cats, dict):
        return NO_CATEGORIES
    return {str(k): tuple(str(c) for c in v) for k, v in cats.items()
            if k in names and isinstance(v, list)}
