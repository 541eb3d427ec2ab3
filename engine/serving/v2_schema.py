"""What the Open Inference Protocol routes declare in the OpenAPI document: the V2 bodies
as pydantic models, the path parameters, the infer request's example and the error answers.

The routes themselves (:mod:`engine.serving.v2`) read and write JSON directly, for speed;
these models only document them (and FastAPI validates the answers of the metadata routes
against them).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from engine.serving.model import MULTICLASS
from engine.serving.v2_tensors import BYTES, DATATYPES, INPUT_NAME, OUTPUT_DATATYPE, output_name
from registry import ModelVersion
from registry.ids import TENANT_ID_PATTERN

__all__ = [
    "EXAMPLE_ROW",
    "EXAMPLE_TENANT",
    "INFER_DOC",
    "INFER_ERRORS",
    "MODEL_ERRORS",
    "PLATFORM",
    "READY_ERRORS",
    "TenantPath",
    "V2InferResponse",
    "V2Live",
    "V2ModelMetadata",
    "V2ModelReady",
    "V2Ready",
    "V2Server",
    "VersionPath",
    "model_metadata",
    "server_version",
]

PLATFORM = "xgboost"
EXAMPLE_TENANT = "tenant-00003"
# An example only: a row for the demo model (`tenantry demo`: 20 features, in its order).
# A tenant's rows have as many values as its model has features (its metadata's shape).
EXAMPLE_ROW: list[float | None] = [0.1, 12, None, 3, 0, 1, 0.5, 2, 7, 1, 0, 3, 0.2, 1, 5, 0, 1,
                                   2, 0, 1]
TenantPath = Annotated[str, Path(
    pattern=TENANT_ID_PATTERN.pattern, examples=[EXAMPLE_TENANT],
    description="model name = tenant id: 1-64 letters, digits, '.', '_' or '-', starting "
                "with a letter or digit")]
VersionPath = Annotated[str, Path(examples=["1"],
                                  description="a registry version (a positive integer)")]



class V2Error(BaseModel):
    """An Open Inference Protocol error."""

    error: str = Field(examples=["unknown tenant 'acme'"])


class V2Server(BaseModel):
    """Server metadata."""

    name: str
    version: str
    extensions: list[str]


class V2Live(BaseModel):
    """Server liveness."""

    live: bool


class V2Ready(BaseModel):
    """Server readiness."""

    ready: bool


class V2ModelReady(BaseModel):
    """Model readiness."""

    name: str
    ready: bool


class V2TensorMetadata(BaseModel):
    """An input or output tensor of a model."""

    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None


class V2ModelMetadata(BaseModel):
    """Model metadata."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]
    parameters: dict[str, Any] | None = Field(
        default=None, examples=[{"objective": "binary:logistic"}],
        description="objective: the model's XGBoost objective (names the output)")


class V2InputTensor(BaseModel):
    """One JSON input tensor (``data`` flat row-major, or nested as ``shape`` says)."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1)
    shape: list[Annotated[int, Field(ge=0)]]
    datatype: str = Field(examples=["FP32"])
    data: list[Any]
    parameters: dict[str, Any] | None = None


class V2RequestedOutput(BaseModel):
    """An output the client asks for."""

    model_config = ConfigDict(extra="allow")
    name: str
    parameters: dict[str, Any] | None = None


class V2InferRequest(BaseModel):
    """An infer request (documentation of the body the route reads itself)."""

    model_config = ConfigDict(extra="allow")
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2InputTensor] = Field(..., min_length=1)
    outputs: list[V2RequestedOutput] | None = None


class V2OutputTensor(BaseModel):
    """One output tensor."""

    name: str
    datatype: str
    shape: list[int]
    data: list[float]


class V2InferResponse(BaseModel):
    """An infer answer: one FP32 tensor named after the model's objective: ``probability``
    ``[n]`` (binary), ``predict`` ``[n]`` (regression) or ``probabilities`` ``[n, K]``
    (multiclass, ``data`` flat row-major)."""

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2OutputTensor]


def inline_refs(schema: Any, defs: dict[str, Any] | None = None) -> Any:
    """``schema`` with its ``$defs`` references inlined (for a raw OpenAPI request body)."""
    if defs is None and isinstance(schema, dict):
        defs = schema.get("$defs", {})
    if isinstance(schema, dict):
        ref = schema.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return inline_refs(defs[ref.rsplit("/", 1)[-1]], defs)  # type: ignore[index]  # set above
        return {k: inline_refs(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [inline_refs(v, defs) for v in schema]
    return schema



# The example is for the demo model (20 features); a model's metadata gives its width.
INFER_DOC: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/json": {
        "schema": inline_refs(V2InferRequest.model_json_schema()),
        "example": {"id": "42", "inputs": [{"name": INPUT_NAME, "datatype": "FP32",
                                            "shape": [1, len(EXAMPLE_ROW)],
                                            "data": EXAMPLE_ROW}]}}}},
}
_ERROR_TEXT = {
    400: "malformed request, wrong shape or datatype, non-finite values, invalid tenant id",
    401: "no valid API key (when API keys are on)",
    403: "the key may not call this tenant",
    404: "unknown tenant or version (or no production model)",
    413: "request body over ingress_max_body_bytes",
    415: "a Content-Type other than JSON",
    503: "model could not be loaded",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": V2Error, "description": _ERROR_TEXT[code]} for code in codes}


MODEL_ERRORS = _errors(400, 401, 403, 404, 503)
INFER_ERRORS = _errors(400, 401, 403, 404, 413, 415, 503)
READY_ERRORS = {**_errors(400, 401, 403, 404),
                 503: {"model": V2ModelReady, "description": "registry snapshot not loaded"}}


def server_version() -> str:
    """tenantry's installed version (``0+unknown`` from a source tree not installed)."""
    try:
        return dist_version("tenantry")
    except PackageNotFoundError:
        return "0+unknown"


def model_metadata(tenant: str, versions: list[str], mv: ModelVersion, names: list[str],
                   classes: int | None) -> dict[str, Any]:
    """The model metadata document (:class:`V2ModelMetadata`) of ``mv``."""
    types = list(mv.feature_types) or ["float"] * len(names)
    out_shape = [-1, classes] if mv.objective == MULTICLASS else [-1]
    return {
        "name": tenant, "versions": versions, "platform": PLATFORM,
        # with categorical features, one [-1, n] tensor has to be BYTES (mixed values)
        "inputs": [{"name": INPUT_NAME,
                    "datatype": BYTES if "categorical" in types else "FP32",
                    "shape": [-1, len(names)],
                    "parameters": {"feature_names": names, "feature_types": types,
                                   "accepted_datatypes": list(DATATYPES)}}],
        "outputs": [{"name": output_name(mv.objective), "datatype": OUTPUT_DATATYPE,
                     "shape": out_shape}],
        "parameters": {"objective": mv.objective},
    }
