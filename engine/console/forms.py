"""The console's admin actions: POST forms (or API calls) that move aliases and change
shadow settings, each recorded with its actor and reason.

Every action needs the admin token, from the form field ``admin_token`` or an
``Authorization: Bearer`` header (see :mod:`engine.console.auth` for why that makes the
forms CSRF-safe). A browser form is answered with a redirect to the tenant page (303); a
caller sending ``Accept: application/json`` gets ``{"tenant_id", "done"}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from engine.console.auth import ConsoleAuth
from engine.console.state import Console
from engine.errors import PayloadTooLarge
from registry import validate_tenant_id
from registry.errors import ValidationError

__all__ = ["add_forms"]


async def _form(request: Request, limit: int) -> dict[str, str]:
    """The urlencoded (or empty) body as a dict of the first value per field."""
    kind = request.headers.get("content-type", "application/x-www-form-urlencoded")
    if not kind.startswith("application/x-www-form-urlencoded"):
        raise ValidationError("send the form as application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"form body over {limit} bytes")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValidationError(f"unreadable form: {exc}") from None
    return {k: v[0] for k, v in fields.items()}


def _int(form: dict[str, str], name: str) -> int:
    if not form.get(name, "").strip():
        raise ValidationError(f"{name} is required")
    return _optional_int(form, name) or 0


def _optional_int(form: dict[str, str], name: str) -> int | None:
    text = form.get(name, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValidationError(f"{name} must be a whole number, got {text!r}") from None


def _float(form: dict[str, str], name: str) -> float:
    text = form.get(name, "").strip()
    try:
        return float(text)
    except ValueError:
        raise ValidationError(f"{name} must be a number between 0 and 1, got {text!r}") \
            from None


def _answer(request: Request, tenant_id: str, done: str) -> Response:
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"tenant_id": tenant_id, "done": done})
    return RedirectResponse(f"/tenants/{tenant_id}?done={quote(done)}", status_code=303)


Act = Callable[[str, dict[str, str], str], str]


def add_forms(app: FastAPI, con: Console) -> None:
    """Register the admin POST routes on ``app``."""
    auth: ConsoleAuth = con.auth

    async def run(request: Request, tenant_id: str, act: Act) -> Response:
        validate_tenant_id(tenant_id)
        form = await _form(request, con.settings.max_form_bytes)
        actor = auth.admin_actor(request.headers, form.get("admin_token") or None)
        con.index.tenant(tenant_id)
        done = await run_in_threadpool(act, tenant_id, form, actor)
        await run_in_threadpool(con.index.refresh)  # the redirect shows the new state
        return _answer(request, tenant_id, done)

    def promote(tenant_id: str, form: dict[str, str], actor: str) -> str:
        version = _int(form, "version")
        alias = form.get("alias") or "production"
        if alias not in ("production", "shadow"):
            raise ValidationError("alias must be production or shadow")
        return con.actions.promote(tenant_id, version, alias, actor, form.get("reason"))

    def rollback(tenant_id: str, form: dict[str, str], actor: str) -> str:
        return con.actions.rollback(tenant_id, actor, form.get("reason"))

    def shadow_set(tenant_id: str, form: dict[str, str], actor: str) -> str:
        return con.actions.shadow_set(tenant_id, _optional_int(form, "version"),
                                      _float(form, "fraction"), form.get("until") or None,
                                      actor, form.get("reason"))

    def shadow_clear(tenant_id: str, form: dict[str, str], actor: str) -> str:
        return con.actions.shadow_clear(tenant_id, actor, form.get("reason"))

    routes: dict[str, Act] = {"promote": promote, "rollback": rollback,
                              "shadow": shadow_set, "shadow/clear": shadow_clear}
    for path, act in routes.items():
        _register(app, f"/tenants/{{tenant_id}}/{path}", act, run)


def _register(app: FastAPI, path: str, act: Act, run: Any) -> None:
    async def endpoint(request: Request, tenant_id: str) -> Response:
        return await run(request, tenant_id, act)

    endpoint.__name__ = "action_" + path.rsplit("}/", 1)[-1].replace("/", "_")
    app.post(path, include_in_schema=False)(endpoint)
