"""The Open Inference Protocol (KServe V2 REST) on a model host; the model name is the
tenant id and the model version a registry version.

Routes (installed by :func:`install_v2`, a ``RouteHook`` for ``create_app``)::

    GET  /v2                                         server metadata
    GET  /v2/health/live   /v2/health/ready          liveness, readiness (as /healthz, /readyz)
    GET  /v2/models/{tenant}[/versions/{v}]          model metadata
    GET  /v2/models/{tenant}[/versions/{v}]/ready    model readiness
    POST /v2/models/{tenant}[/versions/{v}]/infer    JSON tensors in, one output tensor out

The output is named after the registry row's objective: ``probability`` FP32 ``[n]``
(binary), ``predict`` FP32 ``[n]`` (regression) or ``probabilities`` FP32 ``[n, K]``
(multi:softprob; ``data`` flat, row-major); the metadata's ``outputs`` says which.
Without a version the tenant's production model answers; a pinned version is loaded into
the same cache. A request validates its tenant and resolves its version once
(:func:`_resolve`), then predicts through :meth:`ModelHostState.predict_rows`, the same
cache, model and predictor as /v1. Errors are ``{"error": "..."}``: 400 where /v1 says
422, 404 unknown tenant or version, 401/403 API keys, 413 body over the ingress cap, 415
non-JSON Content-Type, 503 model cannot be loaded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import Enum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from engine.errors import PayloadTooLarge, http_status
from engine.serving.auth import KeyStore
from engine.serving.host import ModelHostState
from engine.serving.model import MULTICLASS
from engine.serving.v2_request import parse_infer_request
from engine.serving.v2_schema import (
    INFER_DOC,
    INFER_ERRORS,
    MODEL_ERRORS,
    READY_ERRORS,
    TenantPath,
    V2InferResponse,
    V2Live,
    V2ModelMetadata,
    V2ModelReady,
    V2Ready,
    V2Server,
    VersionPath,
    model_metadata,
    server_version,
)
from engine.serving.v2_tensors import (
    OUTPUT_DATATYPE,
    output_name,
)
from engine.serving.validation import request_id
from registry import ModelVersion, validate_tenant_id
from registry.errors import TenantryError, UnknownVersion

__all__ = ["answer_infer", "install_v2", "v2_error", "v2_route_label"]

SERVER_NAME = "tenantry"


def v2_route_label(path: str) -> str | None:
    """Bounded metrics route label of a /v2 path (never the tenant id); None otherwise.

    Args:
        path: the request path.

    Returns:
        ``v2_server``, ``v2_health``, ``v2_metadata``, ``v2_ready``, ``v2_infer`` or
        ``v2_other`` for /v2 paths; None for any other path.
    """
    if path != "/v2" and not path.startswith("/v2/"):
        return None
    parts = path.rstrip("/").split("/")
    if len(parts) == 2:
        return "v2_server"
    if parts[2] == "health":
        return "v2_health"
    if parts[2] != "models" or len(parts) < 4:
        return "v2_other"
    tail = parts[4:]
    if tail[:1] == ["versions"]:
        if len(tail) < 2:
            return "v2_other"
        tail = tail[2:]
    if not tail:
        return "v2_metadata"
    if tail == ["ready"]:
        return "v2_ready"
    return "v2_infer" if tail == ["infer"] else "v2_other"


def v2_error(exc: TenantryError) -> Response:
    """The V2 error body, ``{"error": message}``; input errors (422 on /v1) answer 400."""
    status, body, _ = _error_answer(exc)
    return Response(body, status_code=status, media_type="application/json")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, read no further than ``limit`` bytes (then 413, as on /v1)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _pinned(version: str | None) -> int | None:
    if version is None:
        return None
    if not version.isdigit():
        raise UnknownVersion(f"no version {version!r}: versions are positive integers")
    return int(version)


def _error_answer(exc: TenantryError) -> tuple[int, bytes, dict[str, str]]:
    """Status, JSON body and headers of a V2 error (the one mapping: 422 answers 400)."""
    status = http_status(exc)
    status = 400 if status == 422 else status
    return status, json.dumps({"error": str(exc) or type(exc).__name__}).encode(), {}


def _resolve(state: ModelHostState, keys: KeyStore, tenant: str, version: str | None,
             headers: Mapping[str, str]) -> ModelVersion:
    """The tenant's production model, or the pinned version (404 if unknown)."""
    validate_tenant_id(tenant)
    keys.check_tenant(headers, tenant)
    return state.resolve(tenant, _pinned(version))


async def answer_infer(state: ModelHostState, keys: KeyStore, tenant: str,
                       version: str | None, headers: Mapping[str, str], body: bytes
                       ) -> tuple[int, bytes, dict[str, str]]:
    """Status, JSON body and headers of a V2 infer call (errors included).

    The ASGI fast path (``engine.serving.api.PredictFastPath``) and the FastAPI route both
    answer through this, as /v1's ``answer_predict``.
    """
    try:
        mv = _resolve(state, keys, tenant, version, headers)
        output = output_name(mv.objective)
        req = parse_infer_request(body, headers, state.settings.max_rows, output)
        pred = await state.predict_rows(
            mv, req.matrix, version is not None,
            request_id(req.id or headers.get("x-request-id")),
            headers.get("x-tenantry-synthetic") == "1")
    except TenantryError as exc:
        return _error_answer(exc)
    doc: dict[str, Any] = {"model_name": tenant, "model_version": str(pred.version)}
    if req.id is not None:
        doc["id"] = req.id
    values: list[Any] = pred.predictions
    shape = [len(values)]
    if values and isinstance(values[0], list):  # (n, K) class probabilities: row-major
        shape.append(len(values[0]))
        values = [p for row in values for p in row]
    doc["outputs"] = [{"name": output, "datatype": OUTPUT_DATATYPE, "shape": shape,
                       "data": values}]
    return 200, json.dumps(doc).encode(), {"x-model-version": str(pred.version)}


class _V2Routes:
    """The handlers' shared lookups: tenant check, key check, version resolution."""

    def __init__(self, state: ModelHostState, keys: KeyStore) -> None:
        self.state = state
        self.keys = keys

    def resolve(self, tenant: str, version: str | None, request: Request) -> ModelVersion:
        """The tenant's production model, or the pinned version (404 if unknown)."""
        return _resolve(self.state, self.keys, tenant, version, request.headers)

    async def metadata(self, tenant: str, version: str | None, request: Request) -> Response:
        """Name, versions, platform, input and output tensors of a model."""
        try:
            mv = self.resolve(tenant, version, request)
            names = list(mv.feature_names)
            classes = mv.num_class
            if not names or (mv.objective == MULTICLASS and not classes):
                # the index did not record them: the loaded model knows
                model, _ = await self.state.model_for(mv)
                names, classes = list(model.feature_names), model.num_class
            versions = [str(m.version) for m in self.state.snapshot.versions(tenant)]
        except TenantryError as exc:
            return v2_error(exc)
        return JSONResponse(model_metadata(tenant, versions, mv, names, classes))

    async def ready(self, tenant: str, version: str | None, request: Request) -> Response:
        """200 when an infer would be served (models load lazily on first use)."""
        try:
            self.resolve(tenant, version, request)
        except TenantryError as exc:
            return v2_error(exc)
        ok = self.state.snapshot.last_refresh_at > 0
        return JSONResponse({"name": tenant, "ready": ok}, status_code=200 if ok else 503)

    async def infer(self, tenant: str, version: str | None, request: Request) -> Response:
        """Predictions for the rows of a V2 request."""
        try:
            body = await _read_body(request, self.state.settings.ingress_max_body_bytes)
        except TenantryError as exc:
            return v2_error(exc)
        status, payload, headers = await answer_infer(self.state, self.keys, tenant, version,
                                                      request.headers, body)
        return Response(payload, status_code=status, media_type="application/json",
                        headers=headers)


def install_v2(app: FastAPI, state: ModelHostState, keys: KeyStore) -> None:
    """Add the Open Inference Protocol routes to a model host's app (a ``RouteHook``).

    Args:
        app: the FastAPI app built by ``create_app``.
        state: the replica's snapshot, cache and predict path.
        keys: API keys (a tenant key reaches only its tenant, as on /v1).
    """
    tags: list[str | Enum] = ["Open Inference Protocol (V2)"]
    _install_server_routes(app, state, tags)
    _install_model_routes(app, _V2Routes(state, keys), tags)


def _install_server_routes(app: FastAPI, state: ModelHostState, tags: list[str | Enum]) -> None:
    """Server metadata, liveness and readiness."""

    @app.get("/v2", tags=tags, response_model=V2Server)
    async def server_metadata() -> dict[str, Any]:
        """Server name, version and protocol extensions."""
        return {"name": SERVER_NAME, "version": server_version(), "extensions": []}

    @app.get("/v2/health/live", tags=tags, response_model=V2Live)
    async def live() -> dict[str, bool]:
        """Liveness: the process answers."""
        return {"live": True}

    @app.get("/v2/health/ready", tags=tags, response_model=V2Ready,
             responses={503: {"model": V2Ready, "description": "registry snapshot not loaded"}})
    async def ready() -> Response:
        """Readiness: the registry snapshot is loaded (the /readyz rule)."""
        ok = state.snapshot.last_refresh_at > 0
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


def _install_model_routes(app: FastAPI, routes: _V2Routes, tags: list[str | Enum]) -> None:
    """Model metadata, readiness and infer, for the production model or a pinned version."""

    @app.get("/v2/models/{tenant}", tags=tags, response_model=V2ModelMetadata,
             responses=MODEL_ERRORS)
    async def model_metadata(tenant: TenantPath, request: Request) -> Response:
        """Metadata of the tenant's production model."""
        return await routes.metadata(tenant, None, request)

    @app.get("/v2/models/{tenant}/versions/{version}", tags=tags,
             response_model=V2ModelMetadata, responses=MODEL_ERRORS)
    async def version_metadata(tenant: TenantPath, version: VersionPath, request: Request) -> Response:
        """Metadata of one version of the tenant's model."""
        return await routes.metadata(tenant, version, request)

    @app.get("/v2/models/{tenant}/ready", tags=tags, response_model=V2ModelReady,
             responses=READY_ERRORS)
    async def model_ready(tenant: TenantPath, request: Request) -> Response:
        """Readiness of the tenant's production model."""
        return await routes.ready(tenant, None, request)

    @app.get("/v2/models/{tenant}/versions/{version}/ready", tags=tags,
             response_model=V2ModelReady, responses=READY_ERRORS)
    async def version_ready(tenant: TenantPath, version: VersionPath, request: Request) -> Response:
        """Readiness of one version of the tenant's model."""
        return await routes.ready(tenant, version, request)

    @app.post("/v2/models/{tenant}/infer", tags=tags, response_model=V2InferResponse,
              responses=INFER_ERRORS, openapi_extra=INFER_DOC)
    async def infer(tenant: TenantPath, request: Request) -> Response:
        """Score rows with the tenant's production model."""
        return await routes.infer(tenant, None, request)

    @app.post("/v2/models/{tenant}/versions/{version}/infer", tags=tags,
              response_model=V2InferResponse, responses=INFER_ERRORS, openapi_extra=INFER_DOC)
    async def version_infer(tenant: TenantPath, version: VersionPath, request: Request) -> Response:
        """Score rows with one version of the tenant's model."""
        return await routes.infer(tenant, version, request)
