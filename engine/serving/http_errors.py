"""The error shapes of a model host's HTTP API, and the tenant path parameter.

Errors are :class:`ErrorBody` (``{"error", "detail"}``) on /v1 and the health routes, and
``{"error"}`` on /v2 (:mod:`engine.serving.v2`). FastAPI's own refusals (an unknown path,
a method a route does not take, a path parameter against its pattern) answer in the same
shapes (:func:`install_error_shapes`), with ``Allow`` on a 405.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from engine.errors import http_status
from engine.serving.v2 import v2_error, v2_route_label
from engine.serving.v2_schema import EXAMPLE_TENANT
from registry import validate_tenant_id
from registry.errors import InvalidTenantId, TenantryError, ValidationError
from registry.ids import TENANT_ID_PATTERN

__all__ = ["ErrorBody", "TenantIdPath", "error_response", "error_responses",
           "install_error_shapes"]

TenantIdPath = Annotated[str, Path(
    pattern=TENANT_ID_PATTERN.pattern, examples=[EXAMPLE_TENANT],
    description="tenant id: 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                "or digit")]


class ErrorBody(BaseModel):
    """An error: its kind and what is wrong."""

    error: str = Field(examples=["ValidationError"])
    detail: str = Field(examples=["row 0 has 3 values; the model expects 20"])


_ERROR_TEXT = {
    401: "no valid API key (when API keys are on)",
    403: "the key may not call this tenant (or an admin route)",
    404: "unknown tenant or no production model",
    413: "request body over ingress_max_body_bytes",
    415: "a Content-Type other than JSON",
    422: "invalid tenant id or malformed input (the detail says what is wrong)",
    503: "the model could not be loaded (checksum, missing or invalid artifact)",
}


def error_responses(*codes: int, **text: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` declaring ``codes`` with the /v1 error body.

    Args:
        codes: HTTP statuses the route can answer with an error.
        text: descriptions by ``s<code>`` overriding the usual ones.

    Returns:
        the ``responses`` mapping for a FastAPI route decorator.
    """
    return {code: {"model": ErrorBody, "description": text.get(f"s{code}", _ERROR_TEXT[code])}
            for code in codes}


def _request_error(exc: RequestValidationError) -> TenantryError:
    """FastAPI's validation failure as tenantry's error (a bad tenant id says why)."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    where = [str(p) for p in first.get("loc", ())]
    if where[:1] == ["path"] and where[-1:] in (["tenant_id"], ["tenant"]):
        try:
            validate_tenant_id(first.get("input"))
        except InvalidTenantId as err:
            return err
    place = ".".join(where) or "request"
    return ValidationError(f"{place}: {first.get('msg', 'invalid')}")


def install_error_shapes(app: FastAPI) -> None:
    """Answer FastAPI's own 404/405/422 in the project's error shapes (``{"error",
    "detail"}``; ``{"error"}`` under /v2, where 422 is 400), keeping ``Allow`` on a 405."""

    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's document without its 422 on /v2 routes (their refusals are 400)."""
        if app.openapi_schema is None:
            doc = default_openapi()
            for path, item in doc.get("paths", {}).items():
                if v2_route_label(path):
                    for operation in item.values():
                        operation.get("responses", {}).pop("422", None)
            if "#/components/schemas/HTTPValidationError" not in json.dumps(doc["paths"]):
                for name in ("HTTPValidationError", "ValidationError"):
                    doc.get("components", {}).get("schemas", {}).pop(name, None)
        return app.openapi_schema  # type: ignore[return-value]  # set by default_openapi

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        err = _request_error(exc)
        return v2_error(err) if v2_route_label(request.url.path) else error_response(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        phrase = HTTPStatus(exc.status_code).phrase
        detail = f"{request.method} {request.url.path}: {exc.detail}"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of one route; a path may have several (PUT and
            # DELETE of the shadow config): Allow lists them all.
            headers["Allow"] = _allowed(app, request.scope) or headers.get("Allow", "")
            detail += f" (allowed: {headers['Allow'] or 'none'})"
        body: dict[str, str] = {"error": detail} if v2_route_label(request.url.path) else \
            {"error": phrase.replace(" ", ""), "detail": detail}
        return JSONResponse(body, status_code=exc.status_code, headers=headers)


def _allowed(app: FastAPI, scope: Any) -> str:
    """Every method some route of ``scope``'s path takes, as an ``Allow`` value."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    if "GET" in methods:
        methods.add("HEAD")  # HeadAsGet answers HEAD wherever GET is answered
    return ", ".join(sorted(methods))


def error_response(exc: TenantryError) -> Response:
    """The JSON error body every route answers with."""
    return JSONResponse({"error": type(exc).__name__, "detail": str(exc)},
                        status_code=http_status(exc))
