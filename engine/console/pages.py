"""The console's read-only pages: tenants, tenant, runs, capacity (and their charts).

The tenants page is served from the in-memory index alone (no Delta read, no lock); the
tenant and runs pages read the Delta tables they show, one request at a time.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from engine.console.charts import diff_histogram_svg, metrics_svg
from engine.console.index import SORT_KEYS, Page
from engine.console.reports import find_plot, scan_reports
from engine.console.state import Console
from engine.console.tables import MonitoringTable, audit_trail, read_runs, shadow_view
from registry import validate_tenant_id
from registry.errors import RegistryError

__all__ = ["add_pages"]

SVG = "image/svg+xml"
COLUMNS = (("tenant", "tenant"), ("shard", "shard"), ("production", "production"),
           (None, "shadow"), ("latest", "latest"), ("versions", "versions"), ("auc", "AUC"),
           ("logloss", "logloss"), ("trained", "last published"))


def _link(current: Page, /, **change: Any) -> str:
    params = {"q": current.q, "sort": current.sort, "desc": int(current.desc),
              "page": current.page, "per_page": current.per_page}
    params.update(change)
    return "/tenants?" + urlencode({k: v for k, v in params.items() if v not in ("", None)})


def add_pages(app: FastAPI, con: Console) -> None:
    """Register the read-only pages on ``app``."""

    @app.get("/", include_in_schema=False)
    async def home() -> Response:
        return RedirectResponse("/tenants", status_code=303)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        view = con.index.view
        return {"ok": True, "tenants": len(view.entries), "generation": view.generation,
                "refresh_errors": con.index.errors}

    @app.get("/tenants")
    async def tenants(request: Request, q: str = "", sort: str = "tenant", desc: int = 0,
                      page: int = 1, per_page: int = 0) -> Response:
        con.auth.check_read(con.auth.viewer(request.headers))
        result = con.index.page(q[:100], sort if sort in SORT_KEYS else "tenant", bool(desc),
                                page, per_page or con.settings.page_size)
        headers = [(label, None if key is None else _link(
            result, sort=key, desc=int(key == result.sort and not result.desc), page=1),
            key == result.sort) for key, label in COLUMNS]
        nav = {"first": _link(result, page=1), "prev": _link(result, page=result.page - 1),
               "next": _link(result, page=result.page + 1),
               "last": _link(result, page=result.pages)}
        view = con.index.view
        return con.render("tenants.html", page=result, headers=headers, nav=nav,
                          generation=view.generation, built_at=view.built_at,
                          build_ms=view.build_seconds * 1e3, nav_active="tenants")

    @app.get("/tenants/{tenant_id}")
    def tenant(request: Request, tenant_id: str, done: str = "") -> Response:
        validate_tenant_id(tenant_id)
        con.auth.check_read(con.auth.viewer(request.headers), tenant_id)
        entry = con.index.tenant(tenant_id)
        monitoring = monitoring_error = None
        with con.lock:
            audit = audit_trail(con.registry, tenant_id)
            shadow = shadow_view(con.registry, tenant_id)
            try:
                monitoring = MonitoringTable(con.registry).latest(tenant_id)
            except RegistryError as exc:
                monitoring_error = str(exc)
        production = set(entry.production_stack[:-1])
        return con.render("tenant.html", entry=entry, row=entry.row, audit=audit,
                          shadow=shadow, report=shadow.report, monitoring=monitoring,
                          monitoring_error=monitoring_error, earlier_production=production,
                          done=done[:200], nav_active="tenants")

    _add_charts(app, con)
    _add_runs_and_capacity(app, con)


def _add_charts(app: FastAPI, con: Console) -> None:
    """A tenant's metrics and shadow-difference charts (SVG)."""

    @app.get("/tenants/{tenant_id}/metrics.svg")
    async def metrics_chart(request: Request, tenant_id: str) -> Response:
        validate_tenant_id(tenant_id)
        con.auth.check_read(con.auth.viewer(request.headers), tenant_id)
        entry = con.index.tenant(tenant_id)
        return Response(metrics_svg(entry.versions, entry.row.production), media_type=SVG)

    @app.get("/tenants/{tenant_id}/shadow.svg")
    def shadow_chart(request: Request, tenant_id: str) -> Response:
        validate_tenant_id(tenant_id)
        con.auth.check_read(con.auth.viewer(request.headers), tenant_id)
        con.index.tenant(tenant_id)
        with con.lock:
            view = shadow_view(con.registry, tenant_id)
        return Response(diff_histogram_svg(view.diffs, view.report.production_version,
                                           view.report.shadow_version), media_type=SVG)


def _add_runs_and_capacity(app: FastAPI, con: Console) -> None:
    """The nightly runs and the capacity reports (with their plots)."""

    @app.get("/runs")
    def runs(request: Request) -> Response:
        con.auth.check_read(con.auth.viewer(request.headers))
        with con.lock:
            rows = read_runs(con.registry)
        return con.render("runs.html", runs=rows, nav_active="runs")

    @app.get("/capacity")
    def capacity(request: Request) -> Response:
        con.auth.check_read(con.auth.viewer(request.headers))
        reports = scan_reports(con.settings.reports_dir)
        return con.render("capacity.html", reports=reports, plot_url=_plot_url,
                          reports_dir=con.settings.reports_dir, nav_active="capacity")

    @app.get("/capacity/plot")
    def capacity_plot(request: Request, report: str, name: str) -> Response:
        con.auth.check_read(con.auth.viewer(request.headers))
        path = find_plot(scan_reports(con.settings.reports_dir), report, name)
        return FileResponse(path, media_type="image/png")


def _plot_url(key: str, name: str) -> str:
    return "/capacity/plot?" + urlencode({"report": key, "name": name})
