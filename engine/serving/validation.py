"""Check a predict request's input: its headers, and its body turned into a float matrix
(or a message saying exactly what is wrong).

A categorical feature takes a string (a category) or null; it enters the matrix as the
category's code in the model's list, and a category the model never saw as missing (NaN),
as XGBoost would otherwise refuse the row. A number for a categorical feature is refused:
categories are names, and ``3`` and ``"3"`` must not be silently confused."""

from __future__ import annotations

import json
import math
import sys
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from engine.errors import UnsupportedMediaType
from registry.errors import ValidationError

__all__ = ["category_code", "check_json_content_type", "parse_body", "request_id", "to_matrix"]

MAX_REQUEST_ID = 128  # longer ids are replaced: they end up in every shadow pair row
F32_MAX = float(np.finfo(np.float32).max)


def request_id(value: str | None) -> str:
    """``value`` if it is a usable request id, else a fresh uuid4 hex.

    Usable: 1 to ``MAX_REQUEST_ID`` printable ASCII characters (space included).
    """
    if value and len(value) <= MAX_REQUEST_ID and value.isascii() and value.isprintable():
        return value
    return uuid.uuid4().hex


def check_json_content_type(value: str | None) -> None:
    """Accept a missing Content-Type, ``application/json`` or ``application/*+json``
    (parameters such as ``charset`` allowed).

    Raises:
        UnsupportedMediaType: any other media type.
    """
    if not value:
        return
    media = value.split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/")
                                       and media.endswith("+json")):
        return
    raise UnsupportedMediaType(f"Content-Type {value[:80]!r} is not accepted; send the body as "
                               "JSON with Content-Type: application/json")


def _reject_constant(name: str) -> float:
    raise ValidationError(f"{name} is not valid JSON; send missing values as null")


# One decoder for every request (json.loads with keyword arguments builds a new one).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_body(raw: bytes, max_rows: int) -> list[Any]:
    """The ``instances`` list of a predict body.

    Raises:
        ValidationError: not JSON, nested too deeply, an integer too long to read, not an
            object with a non-empty ``instances`` list, or more than ``max_rows`` rows.
    """
    try:
        body = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValidationError("request body is nested too deeply; rows are lists of numbers "
                              "or objects of feature name -> number") from None
    except ValueError:
        # json raises a plain ValueError for an integer literal over the digit limit
        raise ValidationError("request body has an integer of more than "
                              f"{sys.get_int_max_str_digits()} digits; values must fit in "
                              "float32") from None
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
    try:
        return float(value)
    except OverflowError:  # an int beyond float64; the range check reports the rest
        raise ValidationError(f"row {row}, feature {col}: integer beyond the float32 range "
                              f"(±{F32_MAX:.7g})") from None


def category_code(value: Any, row: int, col: str, codes: Mapping[str, int]) -> float:
    """The code of category ``value`` of categorical feature ``col`` (NaN: null or unseen).

    Raises:
        ValidationError: ``value`` is not a string or null (numbers included).
    """
    if value is None:
        return math.nan
    if isinstance(value, str):
        code = codes.get(value)
        return math.nan if code is None else float(code)
    raise ValidationError(f"row {row}, feature {col} is categorical: expected a string (a "
                          f"category) or null, got {type(value).__name__} "
                          f"{str(value)[:40]!r}; send the category as a string")


def _in_float32_range(x: np.ndarray, feature_names: Sequence[str]) -> np.ndarray:
    """``x`` (float64) as float32, once no value is infinite or beyond float32's range.

    Raises:
        ValidationError: naming the first such row and feature.
    """
    bad = np.abs(x) > F32_MAX  # NaN (null) compares False
    if bad.any():
        r, c = (int(i) for i in np.argwhere(bad)[0])
        v = float(x[r, c])
        what = "infinite values are not accepted" if math.isinf(v) else \
            f"{v:g} is beyond the float32 range (±{F32_MAX:.7g})"
        raise ValidationError(f"row {r}, feature {feature_names[c]}: {what}")
    return x.astype(np.float32)


def to_matrix(instances: Sequence[Any], feature_names: Sequence[str],
              index: Mapping[str, int],
              categories: Mapping[int, Mapping[str, int]] | None = None) -> np.ndarray:
    """A ``(rows, n_features)`` float32 matrix; null (or an absent named feature) is NaN.

    Rows are either all lists of exactly ``len(feature_names)`` values in model order, or
    all objects keyed by feature name.

    Args:
        instances: the rows.
        feature_names: the model's features, in order.
        index: feature name -> column.
        categories: per categorical column, category -> code (see :func:`category_code`).

    Raises:
        ValidationError: mixed row kinds, wrong width, unknown names, non-numeric values,
            values beyond the float32 range, or a non-string for a categorical feature.
    """
    width = len(feature_names)
    out = np.full((len(instances), width), np.nan, dtype=np.float64)
    cats = categories or {}
    first = instances[0]
    if isinstance(first, list):
        for r, row in enumerate(instances):
            if not isinstance(row, list):
                raise ValidationError(f"row {r}: every row must be a list like row 0")
            if len(row) != width:
                raise ValidationError(f"row {r} has {len(row)} values; this model expects "
                                      f"{width} ({', '.join(feature_names[:5])}"
                                      f"{', …' if width > 5 else ''})")
            if cats:
                out[r] = [category_code(v, r, feature_names[c], cats[c]) if c in cats
                          else _number(v, r, feature_names[c]) for c, v in enumerate(row)]
            else:
                out[r] = [_number(v, r, feature_names[c]) for c, v in enumerate(row)]
        return _in_float32_range(out, feature_names)
    if isinstance(first, dict):
        for r, row in enumerate(instances):
            if not isinstance(row, dict):
                raise ValidationError(f"row {r}: every row must be an object like row 0")
            unknown = [k for k in row if k not in index]
            if unknown:
                raise ValidationError(f"row {r}: unknown feature name(s) "
                                      f"{', '.join(map(repr, unknown[:5]))}")
            for name, value in row.items():
                c = index[name]
                out[r, c] = category_code(value, r, name, cats[c]) if c in cats \
                    else _number(value, r, name)
        return _in_float32_range(out, feature_names)
    raise ValidationError("each instance must be a list of values or an object of "
                          "feature name -> value")
