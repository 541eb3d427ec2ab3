"""Open Inference Protocol (KServe V2) JSON tensors: read an infer request, say exactly
what is wrong with it, and build the feature matrix for the loaded model.

Two input layouts are accepted:

* one tensor of shape ``[n, n_features]`` (any name, e.g. ``input__0``) whose ``data`` is
  flat row-major or nested per the shape;
* one tensor per feature, named by the feature name, each of shape ``[n]``; a feature
  without a tensor is missing (NaN), as an absent key is on /v1.

``null`` in an FP32/FP64 tensor is a missing value (NaN). The binary tensor extension is
refused: every tensor travels as JSON.

Categorical features take strings, in ``BYTES`` tensors: a feature's own ``[n]`` BYTES
tensor (strings or null), or one ``[n, n_features]`` BYTES tensor whose categorical
columns hold strings and other columns numbers (or null), checked as /v1 checks its rows.
A numeric tensor for a categorical feature, or a BYTES one for a numeric feature, is
refused. The output is named after the model's objective (:func:`output_name`).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.serving.model import MULTICLASS, LoadedModel
from engine.serving.validation import category_code, check_json_content_type, to_matrix
from registry.errors import ValidationError

__all__ = ["DATATYPES", "INPUT_NAME", "MULTICLASS_OUTPUT_NAME", "OUTPUT_DATATYPE",
           "OUTPUT_NAME", "REGRESSION_OUTPUT_NAME", "InferRequest", "Tensor", "output_name",
           "parse_infer_request"]

INPUT_NAME = "input__0"
OUTPUT_NAME = "probability"  # binary: FP32 [n], the positive class's probability
REGRESSION_OUTPUT_NAME = "predict"  # regression (any other one-output objective): FP32 [n]
MULTICLASS_OUTPUT_NAME = "probabilities"  # multi:softprob: FP32 [n, K], row-major
OUTPUT_DATATYPE = "FP32"  # what the models compute (XGBoost and the compiled forest)
BINARY_HEADER = "inference-header-content-length"
BYTES = "BYTES"
_FLOAT_TYPES = ("FP32", "FP64")
_PROBABILITY_OBJECTIVES = ("binary:logistic", "reg:logistic")
DATATYPES: Mapping[str, Any] = {
    "FP32": np.float32, "FP64": np.float64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    BYTES: object,  # strings: the categories of categorical features
}


def output_name(objective: str) -> str:
    """The output tensor's name for a model of ``objective`` (the registry row's).

    ``probability`` for binary models (and rows that predate objectives), ``probabilities``
    for ``multi:softprob``, ``predict`` for regression and other one-output objectives.
    """
    if objective == MULTICLASS:
        return MULTICLASS_OUTPUT_NAME
    return OUTPUT_NAME if objective in _PROBABILITY_OBJECTIVES else REGRESSION_OUTPUT_NAME
_FP32_MAX = float(np.finfo(np.float32).max)
_BINARY_REFUSED = ("the binary tensor extension is not supported: send every tensor as "
                   'JSON "data" (tritonclient: set_data_from_numpy(..., binary_data=False))')


@dataclass(frozen=True)
class Tensor:
    """One checked input tensor; ``values`` are flat float64, NaN = missing."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    values: np.ndarray


@dataclass(frozen=True)
class InferRequest:
    """A checked infer request: its inputs, row count and optional id."""

    inputs: tuple[Tensor, ...]
    rows: int
    id: str | None = None

    def matrix(self, model: LoadedModel) -> np.ndarray:
        """The ``(rows, n_features)`` float32 matrix for ``model``.

        Raises:
            ValidationError: wrong feature width, unknown feature names, or a tensor whose
                kind (numbers or BYTES strings) does not fit its features.
        """
        names = model.feature_names
        cats = model.category_codes
        first = self.inputs[0]
        if len(first.shape) == 2:
            if first.shape[1] != len(names):
                shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
                raise ValidationError(
                    f"input {first.name!r} has shape {list(first.shape)}; this model expects "
                    f"[-1, {len(names)}] ({shown})")
            if first.datatype == BYTES and not cats:
                raise ValidationError(f"input {first.name!r}: datatype 'BYTES' is for "
                                      "categorical features and this model has none; send "
                                      "numbers as FP32, FP64 or INT tensors")
            if first.datatype == BYTES:  # mixed rows: checked as /v1 checks its rows
                return to_matrix(first.values.reshape(first.shape).tolist(), names,
                                 model.index, cats)
            if cats:
                raise ValidationError(
                    f"input {first.name!r}: feature(s) {', '.join(names[j] for j in cats)} "
                    f"are categorical: send the rows as a BYTES tensor (categories as "
                    f"strings, numbers for the other features), or one [n] tensor per "
                    f"feature, BYTES for the categorical ones")
            return first.values.reshape(first.shape).astype(np.float32)
        unknown = [t.name for t in self.inputs if t.name not in model.index]
        if unknown:
            raise ValidationError(
                f"unknown feature name(s) {', '.join(map(repr, unknown[:5]))}: name each "
                f"[n] tensor after a feature, or send one [n, {len(names)}] tensor")
        out = np.full((self.rows, len(names)), np.nan, dtype=np.float32)
        for tensor in self.inputs:
            col = model.index[tensor.name]
            if col in cats:
                if tensor.datatype != BYTES:
                    raise ValidationError(
                        f"input {tensor.name!r}: feature {tensor.name} is categorical: send "
                        f"its categories as strings in a BYTES tensor, not {tensor.datatype}")
                out[:, col] = [category_code(v, r, tensor.name, cats[col])
                               for r, v in enumerate(tensor.values.tolist())]
            elif tensor.datatype == BYTES:
                raise ValidationError(
                    f"input {tensor.name!r}: feature {tensor.name} is numeric: send it as an "
                    "FP32, FP64 or INT tensor, not BYTES")
            else:
                out[:, col] = tensor.values
        return out


def _constant(name: str) -> None:
    """``NaN`` is a missing value (tritonclient writes a numpy NaN so); infinities are not."""
    if name == "NaN":
        return None
    raise ValidationError(f"{name} is not a valid feature value; send missing values as null")


_DECODER = json.JSONDecoder(parse_constant=_constant)  # built once, as on /v1


def _load(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body, with /v1's rules for what is not readable."""
    try:
        body = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationError(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValidationError("request body is nested too deeply") from None
    except ValueError:  # an integer literal over the interpreter's digit limit
        raise ValidationError(f"request body has an integer of more than "
                              f"{sys.get_int_max_str_digits()} digits") from None
    if not isinstance(body, dict):
        raise ValidationError('request body must be a JSON object with an "inputs" list')
    return body


def _flatten(data: Any, shape: Sequence[int], name: str) -> list[Any]:
    """Row-major values of ``data``: flat, or nested exactly as ``shape`` says."""
    if not isinstance(data, list):
        raise ValidationError(f'input {name!r}: "data" must be a list')
    if not any(isinstance(v, list) for v in data):
        return data
    flat: list[Any] = []

    def walk(level: Any, depth: int) -> None:
        if depth == len(shape):
            if isinstance(level, list):
                raise ValidationError(f"input {name!r}: data is nested deeper than its shape "
                                      f"{list(shape)}")
            flat.append(level)
            return
        if not isinstance(level, list) or len(level) != shape[depth]:
            raise ValidationError(f"input {name!r}: nested data does not match its shape "
                                  f"{list(shape)}")
        for item in level:
            walk(item, depth + 1)

    walk(data, 0)
    return flat


def _values(flat: list[Any], datatype: str, name: str) -> np.ndarray:
    """Check every element's JSON type and range; float64 array, None -> NaN (BYTES: an
    object array of strings, numbers and None, checked per feature by the model)."""
    if datatype == BYTES:
        bad = [v for v in flat if type(v) not in (str, int, float, type(None))]
        if bad:
            raise ValidationError(f"input {name!r}: a BYTES tensor holds strings (numbers or "
                                  f"null for numeric features), got {type(bad[0]).__name__} "
                                  f"{str(bad[0])[:40]!r}")
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out
    allowed: tuple[type, ...] = (int, float, type(None)) if datatype in _FLOAT_TYPES else (int,)
    if not all(type(v) in allowed for v in flat):  # type(): bool is not a number here
        bad = next(v for v in flat if type(v) not in allowed)
        kind = "numbers or null" if datatype in _FLOAT_TYPES else "integers"
        raise ValidationError(f"input {name!r}: a {datatype} tensor holds {kind}, got "
                              f"{type(bad).__name__} {str(bad)[:40]!r}")
    if datatype not in _FLOAT_TYPES and flat:  # range before float conversion
        info = np.iinfo(DATATYPES[datatype])
        if min(flat) < info.min or max(flat) > info.max:
            raise ValidationError(f"input {name!r}: a value is outside the {datatype} range "
                                  f"[{info.min}, {info.max}]")
    out_of_range = ValidationError(f"input {name!r}: values must be finite and within the "
                                   f"FP32 range (±{_FP32_MAX:.7g}) the models compute in")
    try:
        values = np.array(flat, dtype=np.float64)
    except OverflowError:  # an integer beyond float64
        raise out_of_range from None
    if np.any(np.abs(values) > _FP32_MAX):  # NaN (null) compares False: missing is fine
        raise out_of_range
    return values


def _shape(spec: Any, name: str) -> tuple[int, ...]:
    if not isinstance(spec, list) or not all(type(d) is int and d >= 0 for d in spec):
        raise ValidationError(f'input {name!r}: "shape" must be a list of non-negative '
                              "integers")
    return tuple(spec)


def _tensor(spec: Any, index: int) -> Tensor:
    if not isinstance(spec, dict):
        raise ValidationError(f"inputs[{index}] must be an object with name, shape, "
                              "datatype and data")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ValidationError(f'inputs[{index}] needs a "name" string')
    params = spec.get("parameters")
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise ValidationError(f'input {name!r}: "parameters" must be an object')
    if "binary_data_size" in params:
        raise ValidationError(_BINARY_REFUSED)
    datatype = spec.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise ValidationError(f"input {name!r}: datatype {datatype!r} is not supported; use "
                              f"one of {', '.join(DATATYPES)}")
    shape = _shape(spec.get("shape"), name)
    if "data" not in spec:
        raise ValidationError(f'input {name!r} has no "data"')
    flat = _flatten(spec["data"], shape, name)
    if len(flat) != math.prod(shape):
        raise ValidationError(f"input {name!r}: shape {list(shape)} needs "
                              f"{math.prod(shape)} values, data has {len(flat)}")
    return Tensor(name, datatype, shape, _values(flat, datatype, name))


def _check_outputs(outputs: Any, output: str) -> None:
    if outputs is None:
        return
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise ValidationError('"outputs" must be a list of objects with a "name"')
    if not all(isinstance(o.get("parameters", {}), dict | None) for o in outputs):
        raise ValidationError('an output\'s "parameters" must be an object')
    unknown = [o.get("name") for o in outputs if o.get("name") != output]
    if unknown:
        raise ValidationError(f"unknown output(s) {', '.join(map(repr, unknown))}; this model "
                              f"has one output, {output!r}")


def _rows(inputs: Sequence[Tensor], max_rows: int) -> int:
    two_d = [t for t in inputs if len(t.shape) == 2]
    one_d = [t for t in inputs if len(t.shape) == 1]
    if two_d and len(inputs) == 1:
        rows = two_d[0].shape[0]
    elif len(one_d) == len(inputs):
        rows = one_d[0].shape[0]
        if any(t.shape[0] != rows for t in one_d):
            raise ValidationError("every per-feature input must have the same shape [n]")
        names = [t.name for t in inputs]
        if len(set(names)) != len(names):
            raise ValidationError("an input name appears twice")
    else:
        raise ValidationError("send one input of shape [n, n_features], or one input of "
                              "shape [n] per feature named after it; got shapes "
                              f"{[list(t.shape) for t in inputs]}")
    if rows == 0:
        raise ValidationError("the request has no rows (shape [0, …])")
    if rows > max_rows:
        raise ValidationError(f"too many rows: {rows} > limit {max_rows}")
    return rows


def parse_infer_request(raw: bytes, headers: Mapping[str, str], max_rows: int,
                        output: str = OUTPUT_NAME) -> InferRequest:
    """Read and check a V2 infer request body (not yet against a model).

    Args:
        raw: the request body.
        headers: request headers (lower-case keys or a case-insensitive mapping).
        max_rows: most rows accepted (as on /v1).
        output: the model's output name (:func:`output_name`), the one output a request
            may ask for.

    Returns:
        the checked request.

    Raises:
        ValidationError: binary tensors, malformed JSON or tensors, unsupported datatypes,
            non-finite values, unknown outputs, no or too many rows.
        UnsupportedMediaType: a Content-Type that is not JSON (as on /v1).
    """
    if headers.get(BINARY_HEADER) is not None:
        raise ValidationError(_BINARY_REFUSED)
    check_json_content_type(headers.get("content-type"))
    body = _load(raw)
    specs = body.get("inputs")
    if not isinstance(specs, list) or not specs:
        raise ValidationError('"inputs" must be a non-empty list of tensors')
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ValidationError('"id" must be a string')
    if not isinstance(body.get("parameters", {}), dict | None):
        raise ValidationError('"parameters" must be an object')
    _check_outputs(body.get("outputs"), output)
    for index, spec in enumerate(specs):  # shapes first: no data is read past the row limit
        if isinstance(spec, dict) and isinstance(spec.get("shape"), list) and spec["shape"] \
                and type(spec["shape"][0]) is int and spec["shape"][0] > max_rows:
            raise ValidationError(f"too many rows: {spec['shape'][0]} > limit {max_rows}")
    inputs = tuple(_tensor(spec, i) for i, spec in enumerate(specs))
    return InferRequest(inputs, _rows(inputs, max_rows), request_id)
