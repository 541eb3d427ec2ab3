"""The console's FastAPI application: server-rendered pages over the registry.

:func:`create_app` wires one :class:`Console` (registry, tenant index, key rules, actions,
templates) into the pages (:mod:`engine.console.pages`) and the admin forms
(:mod:`engine.console.forms`). Everything is served from this process: templates and the
stylesheet are package data, charts are SVG rendered here; no CDN, no script.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from engine.console.actions import Actions
from engine.console.auth import ConsoleAuth
from engine.console.index import TenantIndex
from engine.console.settings import ConsoleSettings
from engine.serving.auth import KeyStore
from registry import Registry
from registry.errors import TenantryError, Unauthorized

__all__ = ["Console", "build_console", "create_app"]

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


@dataclass
class Console:
    """Everything the pages share."""

    settings: ConsoleSettings
    registry: Registry
    index: TenantIndex
    auth: ConsoleAuth
    actions: Actions
    templates: Environment
    lock: threading.Lock  # Delta reads and writes of the shared registry, one at a time
    started_at: datetime = field(default_factory=datetime.now)

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        """Render template ``name`` as an HTML response."""
        html = self.templates.get_template(name).render(settings=self.settings,
                                                        writable=self.auth.writable,
                                                        **context)
        return HTMLResponse(html, status_code=status)


def _templates() -> Environment:
    env = Environment(loader=PackageLoader("engine.console", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters["num"] = _num
    env.filters["when"] = _when
    return env


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _when(value: datetime | None) -> str:
    return "–" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def build_console(settings: ConsoleSettings, keys: KeyStore | None = None) -> Console:
    """Open the registry and build the console (the index is loaded once here).

    Raises:
        RegistryNotFound: there is no registry at ``settings.registry``.
        ValidationError: the key file cannot be read.
    """
    registry = Registry.open(settings.registry)
    lock = threading.Lock()
    keys = keys if keys is not None else KeyStore.load(settings.api_keys_file)
    # One snapshot, refreshed incrementally, serves the index and the actions alike.
    index = TenantIndex(registry.snapshot(refresh=False), settings.refresh_s, lock=lock)
    index.refresh()
    return Console(settings, registry, index, ConsoleAuth(keys), Actions(registry, lock),
                   _templates(), lock)


def create_app(settings: ConsoleSettings, console: Console | None = None,
               refresher: bool = True) -> FastAPI:
    """The console app; its refresher thread runs while the app is being served.

    Args:
        settings: where the registry, keys and reports are.
        console: a prebuilt console (tests); built from ``settings`` otherwise.
        refresher: follow the registry on a background thread while serving.
    """
    from engine.console.forms import add_forms
    from engine.console.pages import add_pages

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
        resp = con.render("error.html", status=exc.status_code, error=str(exc),
                          kind=type(exc).__name__, status_code=exc.status_code)
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
