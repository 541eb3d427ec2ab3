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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.serving.model import MULTICLASS, LoadedModel
from engine.serving.validation import category_code, to_matrix
from registry.errors import ValidationError

__all__ = ["DATATYPES", "INPUT_NAME", "MULTICLASS_OUTPUT_NAME", "OUTPUT_DATATYPE",
           "OUTPUT_NAME", "REGRESSION_OUTPUT_NAME", "InferRequest", "Tensor", "output_name"]

INPUT_NAME = "input__0"
OUTPUT_NAME = "probability"  # binary: FP32 [n], the positive class's probability
REGRESSION_OUTPUT_NAME = "predict"  # regression (any other one-output objective): FP32 [n]
MULTICLASS_OUTPUT_NAME = "probabilities"  # multi:softprob: FP32 [n, K], row-major
OUTPUT_DATATYPE = "FP32"  # what the models compute (XGBoost and the compiled forest)
BYTES = "BYTES"
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
