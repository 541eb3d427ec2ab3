"""The console's FastAPI application: server-rendered pages over the registry.

:func:`create_app` wires one :class:`Console` (registry, tenant index, key rules, actions,
templates) into the pages (:mod:`engine.console.pages`) and the admin forms
(:mod:`engine.console.forms`). Everything is served from this process: templates and the
stylesheet are package data, charts are SVG rendered here; no CDN, no script.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import Response

from engine.console.forms import add_forms
from engine.console.pages import add_pages
from engine.console.settings import ConsoleSettings
from engine.console.state import Console, build_console
from engine.errors import Unauthorized, http_status
from registry.errors import TenantryError

__all__ = ["Console", "build_console", "create_app"]

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


def create_app(settings: ConsoleSettings, console: Console | None = None,
               refresher: bool = True) -> FastAPI:
    """The console app; its refresher thread runs while the app is being served.

    Args:
        settings: where the registry, keys and reports are.
        console: a prebuilt console (tests); built from ``settings`` otherwise.
        refresher: follow the registry on a background thread while serving.
    """
    con = console or build_console(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if refresher:
            con.index.start()
        try:
            yield
        finally:
            con.index.stop()

    app = FastAPI(title="tenantry console", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.console = con

    @app.exception_handler(TenantryError)
    async def on_error(request: Request, exc: TenantryError) -> Response:
        status = http_status(exc)
        resp = con.render("error.html", status=status, error=str(exc),
                          kind=type(exc).__name__, status_code=status)
        if isinstance(exc, Unauthorized) and request.method == "GET":
            resp.headers["www-authenticate"] = 'Basic realm="tenantry console"'
        return resp

    @app.middleware("http")
    async def headers(request: Request,
                      call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        resp = await call_next(request)
        resp.headers.setdefault("x-content-type-options", "nosniff")
        resp.headers.setdefault("referrer-policy", "no-referrer")
        if resp.headers.get("content-type", "").startswith("text/html"):
            resp.headers["content-security-policy"] = CSP
            resp.headers["cache-control"] = "no-store"
        return resp

    css = resources.files("engine.console").joinpath("static/console.css").read_bytes()

    @app.get("/static/console.css", include_in_schema=False)
    async def stylesheet() -> Response:
        return Response(css, media_type="text/css",
                        headers={"cache-control": "public, max-age=3600"})

    add_pages(app, con)
    add_forms(app, con)
    return app
