"""Reading an Open Inference Protocol infer request: the JSON body, its tensors, shapes,
datatypes and requested outputs, each mistake answered with what is wrong and what to send.

The checked request (:class:`~engine.serving.v2_tensors.InferRequest`) builds the feature
matrix for the loaded model; JSON is decoded by the standard library's decoder.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from engine.serving.v2_tensors import BYTES, DATATYPES, OUTPUT_NAME, InferRequest, Tensor
from engine.serving.validation import check_json_content_type
from registry.errors import ValidationError

__all__ = ["parse_infer_request"]

BINARY_HEADER = "inference-header-content-length"
_FLOAT_TYPES = ("FP32", "FP64")
_FP32_MAX = float(np.finfo(np.float32).max)
_BINARY_REFUSED = ("the binary tensor extension is not supported: send every tensor as "
                   'JSON "data" (tritonclient: set_data_from_numpy(..., binary_data=False))')


def _constant(name: str) -> None:
    """``NaN`` is a missing value (tritonclient writes a numpy NaN so); infinities are not."""
    if name == "NaN":
        return
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
