"""Turn a predict request body into a float matrix, or say exactly what is wrong."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from registry.errors import ValidationError

__all__ = ["parse_body", "to_matrix"]


def _reject_constant(name: str) -> float:
    raise ValidationError(f"{name} is not valid JSON; send missing values as null")


def parse_body(raw: bytes, max_rows: int) -> list[Any]:
    """The ``instances`` list of a predict body.

    Raises:
        ValidationError: not JSON, not an object with a non-empty ``instances`` list, or
            more than ``max_rows`` rows.
    """
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except ValidationError:
        raise
    except ValueError as exc:
        raise ValidationError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict) or "instances" not in body:
        raise ValidationError('request body must be a JSON object with an "instances" list')
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise ValidationError('"instances" must be a non-empty list of rows')
    if len(instances) > max_rows:
        raise ValidationError(f"too many rows: {len(instances)} > limit {max_rows}")
    return instances


def _number(value: Any, row: int, col: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"row {row}, feature {col}: expected a number or null, got "
                              f"{type(value).__name__} {str(value)[:40]!r}")
    f = float(value)
    if math.isinf(f):
        raise ValidationError(f"row {row}, feature {col}: infinite values are not accepted")
    return f


def to_matrix(instances: Sequence[Any], feature_names: Sequence[str],
              index: Mapping[str, int]) -> np.ndarray:
    """A ``(rows, n_features)`` float32 matrix; null (or an absent named feature) is NaN.

    Rows are either all lists of exactly ``len(feature_names)`` values in model order, or
    all objects keyed by feature name.

    Raises:
        ValidationError: mixed row kinds, wrong width, unknown names or non-numeric values.
    """
    width = len(feature_names)
    out = np.full((len(instances), width), np.nan, dtype=np.float32)
    first = instances[0]
    if isinstance(first, list):
        for r, row in enumerate(instances):
            if not isinstance(row, list):
                raise ValidationError(f"row {r}: every row must be a list like row 0")
            if len(row) != width:
                raise ValidationError(f"row {r} has {len(row)} values; this model expects "
                                      f"{width} ({', '.join(feature_names[:5])}"
                                      f"{', …' if width > 5 else ''})")
            out[r] = [_number(v, r, feature_names[c]) for c, v in enumerate(row)]
        return out
    if isinstance(first, dict):
        for r, row in enumerate(instances):
            if not isinstance(row, dict):
                raise ValidationError(f"row {r}: every row must be an object like row 0")
            unknown = [k for k in row if k not in index]
            if unknown:
                raise ValidationError(f"row {r}: unknown feature name(s) "
                                      f"{', '.join(map(repr, unknown[:5]))}")
            for name, value in row.items():
                out[r, index[name]] = _number(value, r, name)
        return out
    raise ValidationError("each instance must be a list of values or an object of "
                          "feature name -> value")
