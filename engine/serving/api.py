"""The model host's HTTP API (FastAPI; OpenAPI at /docs).

Every answer the routes can give is declared in the OpenAPI document with its real body;
the error shapes are :mod:`engine.serving.http_errors`'s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from engine.errors import http_status
from engine.metrics import Metrics
from engine.serving.auth import KeyStore
from engine.serving.host import ModelHostState
from engine.serving.http_errors import (
    TenantIdPath,
    error_response,
    error_responses,
    install_error_shapes,
)
from engine.serving.v2 import answer_infer, v2_route_label
from engine.serving.v2_schema import EXAMPLE_ROW
from engine.serving.validation import F32_MAX, check_json_content_type, request_id
from registry import Alias, validate_tenant_id
from registry.errors import TenantryError, UnknownTenant

__all__ = ["PredictFastPath", "RouteHook", "answer_predict", "create_app", "route_label"]

ASGIApp = Callable[..., Awaitable[None]]
RouteHook = Callable[[FastAPI, ModelHostState, KeyStore], None]


Value = Annotated[float, Field(ge=-F32_MAX, le=F32_MAX)]  # float32 range; null = missing


class PredictRequest(BaseModel):
    """Rows to score: lists in model feature order, or objects keyed by feature name (an
    absent feature is missing). Numeric features take numbers, categorical features
    strings (a category the model never saw counts as missing). The examples are for the
    demo model (20 features); send as many values per row as the tenant's model has
    features."""

    instances: list[list[Value | str | None] | dict[str, Value | str | None]] = Field(
        ..., min_length=1,
        examples=[[EXAMPLE_ROW], [{"txn_amount": 12.5, "account_age_days": 400}]])


class HealthBody(BaseModel):
    """Liveness."""

    status: str = Field(examples=["ok"])


class ReadyBody(BaseModel):
    """Readiness, with this host's cache and registry snapshot figures."""

    model_config = ConfigDict(extra="allow")
    ready: bool


class PredictResponse(BaseModel):
    """Production predictions, one per row, by the model's objective: binary, the positive
    class's probability; regression, the predicted value; multiclass, a list of the K
    class probabilities (class 0 first)."""

    tenant_id: str
    model_version: int
    predictions: list[float] | list[list[float]] = Field(
        description="binary: probabilities; regression: values; multiclass: per row a "
                    "list of K class probabilities",
        examples=[[0.12, 0.87], [[0.7, 0.2, 0.1]]])


def route_label(path: str) -> str:
    """Bounded route label for metrics (never the tenant id)."""
    if path.startswith("/v1/tenants/"):
        tail = path.rsplit("/", 1)[-1]
        return tail if tail in ("predict", "model", "shadow") else "tenant_other"
    if path in ("/healthz", "/readyz", "/metrics"):
        return path[1:]
    if path.startswith("/v1/admin/"):
        return "admin"
    return v2_route_label(path) or "other"


async def answer_predict(state: ModelHostState, keys: KeyStore, tenant_id: str,
                         headers: Mapping[str, str], body: bytes
                         ) -> tuple[int, bytes, dict[str, str]]:
    """Status, JSON body and headers of a predict call (errors included)."""
    try:
        validate_tenant_id(tenant_id)
        keys.check_tenant(headers, tenant_id)
        check_json_content_type(headers.get("content-type"))
        pred = await state.predict(tenant_id, body, request_id(headers.get("x-request-id")),
                                   headers.get("x-tenantry-synthetic") == "1")
    except TenantryError as exc:
        return http_status(exc), json.dumps({"error": type(exc).__name__,
                                            "detail": str(exc)}).encode(), {}
    payload = json.dumps({"tenant_id": pred.tenant_id, "model_version": pred.version,
                          "predictions": pred.predictions}).encode()
    return 200, payload, {"x-model-version": str(pred.version)}


class PredictFastPath:
    """Answers ``POST /v1/tenants/{id}/predict`` and ``POST /v2/models/{id}[/versions/{v}]
    /infer`` straight from ASGI, skipping FastAPI's routing and request objects on the hot
    path; everything else goes to the app (whose routes answer the same way)."""

    def __init__(self, app: ASGIApp, state: ModelHostState, keys: KeyStore) -> None:
        self.app = app
        self.state = state
        self.keys = keys
        self.max_body_bytes = state.settings.ingress_max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # Split the raw path: a tenant segment holding an encoded "/" (``bad%2F..id``) is
        # one (invalid) tenant id, answered 422, not another route.
        parts = scope.get("raw_path", b"").split(b"?", 1)[0].split(b"/")
        if scope["type"] != "http" or scope["method"] != "POST" or len(parts) < 5:
            await self.app(scope, receive, send)
            return
        if len(parts) == 5 and parts[1:3] == [b"v1", b"tenants"] and parts[4] == b"predict":
            version = None
        elif parts[1:3] == [b"v2", b"models"] and parts[-1] == b"infer" and (
                len(parts) == 5 or (len(parts) == 7 and parts[4] == b"versions")):
            version = unquote(parts[5].decode("latin-1")) if len(parts) == 7 else ""
        else:
            await self.app(scope, receive, send)
            return
        tenant = unquote(parts[3].decode("latin-1"))
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:  # only reachable past the ingress
                msg = f"request body over {self.max_body_bytes} bytes"
                doc = ({"error": "PayloadTooLarge", "detail": msg} if version is None
                       else {"error": msg})  # each protocol's error body
                await _send_json(send, 413, json.dumps(doc).encode(), {})
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        body = b"".join(chunks)
        if version is None:
            status, payload, extra = await answer_predict(self.state, self.keys, tenant,
                                                          headers, body)
        else:
            status, payload, extra = await answer_infer(self.state, self.keys, tenant,
                                                        version or None, headers, body)
        await _send_json(send, status, payload, extra)


async def _send_json(send: Any, status: int, payload: bytes, extra: Mapping[str, str]) -> None:
    raw = [(b"content-type", b"application/json"),
           (b"content-length", str(len(payload)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


class HeadAsGet:
    """Answers ``HEAD`` like ``GET`` (RFC 9110: same headers, no body). The app sees a GET;
    the server, which still sees HEAD, sends no body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send)


class MetricsMiddleware:
    """Pure ASGI middleware counting requests by route and status (cheap on the hot path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = route_label(scope["path"])
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)


def create_app(state: ModelHostState, keys: KeyStore | None = None,
               extra_routes: list[RouteHook] | None = None,
               ready: Callable[[], bool] = lambda: True) -> Any:
    """The FastAPI app of a model host, wrapped in the metrics middleware."""
    keys = keys or KeyStore()
    app = FastAPI(title="tenantry", version="0.1.0",
                  description="Per-tenant model predictions with lazy-loaded, cached models.")

    @app.exception_handler(TenantryError)
    async def _tenantry_error(_: Request, exc: TenantryError) -> Response:
        return error_response(exc)

    install_error_shapes(app)
    predict_schema = PredictRequest.model_json_schema()
    predict_schema["properties"]["instances"]["maxItems"] = state.settings.max_rows

    @app.post("/v1/tenants/{tenant_id}/predict", response_model=PredictResponse,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": predict_schema}}}},
              responses=error_responses(401, 403, 404, 413, 415, 422, 503))
    async def predict(tenant_id: TenantIdPath, request: Request) -> Response:
        """Score rows with the tenant's production model."""
        # Requests normally take PredictFastPath; this route documents the API and serves
        # the same answer through the same function if FastAPI routing is used.
        status, payload, headers = await answer_predict(state, keys, tenant_id,
                                                        request.headers, await request.body())
        return Response(payload, status_code=status, media_type="application/json",
                        headers=headers)

    @app.get("/v1/tenants/{tenant_id}/model",
             responses=error_responses(401, 403, 404, 422, s404="unknown tenant"))
    async def model(tenant_id: TenantIdPath, request: Request) -> dict[str, Any]:
        """Production (and shadow) version metadata and metrics of a tenant."""
        validate_tenant_id(tenant_id)
        keys.check_tenant(request.headers, tenant_id)
        snap = state.snapshot
        tm = snap.tenant_models(tenant_id)
        if tm.production is None and tm.shadow is None:
            raise UnknownTenant(f"tenant {tenant_id!r} has no production model")
        doc = tm.to_json()
        doc["aliases"] = {a.value: snap.alias_version(tenant_id, a) for a in Alias}
        return doc

    _install_health_routes(app, state, ready)
    for hook in extra_routes or []:
        hook(app, state, keys)
    return MetricsMiddleware(HeadAsGet(PredictFastPath(app, state, keys)), state.metrics)


def _install_health_routes(app: FastAPI, state: ModelHostState,
                           ready: Callable[[], bool]) -> None:
    """Liveness, readiness and the replica's metrics."""

    @app.get("/healthz", response_model=HealthBody)
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=ReadyBody,
             responses={503: {"model": ReadyBody, "description": "not ready (no snapshot yet)"}})
    async def readyz() -> Response:
        """Readiness: the registry snapshot is loaded and the host accepts traffic.

        ``stale`` says the snapshot has not refreshed for a while (registry unreadable);
        the host still serves it, so that alone does not make it unready.
        """
        ok = ready() and state.snapshot.last_refresh_at > 0
        return JSONResponse({"ready": ok, **state.stats(), **state.freshness()},
                            status_code=200 if ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text exposition (0.0.4)"}})
    async def metrics() -> Response:
        """This replica's Prometheus metrics."""
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")
