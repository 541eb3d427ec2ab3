"""Shadow-mode HTTP routes added to every model host.

``PUT``/``DELETE /v1/admin/tenants/{tenant_id}/shadow`` (admin token) write the shared
config table, so every replica picks the change up within a refresh, and apply it to the
answering replica at once. Each change records who made it (``admin``; ``anonymous`` on a
host without keys) and why (``reason`` in the PUT body; a ``reason`` query parameter or
JSON body ``{"reason": …}`` on DELETE). ``GET /v1/tenants/{tenant_id}/shadow`` shows the config, the
version it resolves to and this replica's live counters. Those counters are replica-wide:
an admin token (or a host without keys) sees them all, a tenant key only the numbers among
them, as free text such as ``last_error`` may name other tenants.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticError

from engine.serving.auth import KeyStore, hash_key
from engine.serving.host import ModelHostState
from engine.serving.http_errors import TenantIdPath, error_responses
from engine.shadow.config import ConfigStore, build_config
from engine.shadow.mirror import ShadowMirror
from registry import validate_tenant_id
from registry.errors import NotFound, ValidationError

__all__ = ["ShadowBody", "add_shadow_routes"]


class ShadowBody(BaseModel):
    """Shadow settings of one tenant (version omitted: the tenant's ``shadow`` alias)."""

    version: int | None = Field(None, ge=1, examples=[3])
    fraction: float = Field(..., ge=0.0, le=1.0, examples=[0.1])
    start: datetime | None = None
    until: datetime | None = Field(None, examples=["2026-12-01T18:00:00Z"])
    reason: str | None = Field(None, max_length=500, examples=["compare the held-back model"])


def _actor(keys: KeyStore) -> str:
    """Who an admin call is, for the audit trail (call after check_admin accepted it)."""
    return "admin" if keys.enabled else "anonymous"


async def _delete_reason(request: Request) -> str | None:
    """The reason of a DELETE: ``?reason=`` or a JSON body ``{"reason": …}``."""
    reason = request.query_params.get("reason")
    raw = await request.body()
    if raw.strip():
        try:
            doc = json.loads(raw)
        except ValueError:
            raise ValidationError("invalid body: expected JSON like {\"reason\": \"…\"}") \
                from None
        if not isinstance(doc, dict) or not isinstance(doc.get("reason", ""), str | None):
            raise ValidationError("invalid body: expected JSON like {\"reason\": \"…\"}")
        reason = doc.get("reason") or reason
    return (reason or "")[:500] or None


async def _check_target(state: ModelHostState, tenant_id: str, version: int | None) -> None:
    """The tenant (and version, when given) must exist; refresh once if the snapshot lags."""
    def check() -> None:
        state.snapshot.versions(tenant_id)
        if version is not None:
            state.snapshot.version(tenant_id, version)

    try:
        check()
    except NotFound:
        await state.refresh_once()
        check()


def _sees_replica(keys: KeyStore, headers: Mapping[str, str]) -> bool:
    """Whether the caller may see replica-wide state naming any tenant: an admin token, or
    anyone when keys are off. Call after :meth:`KeyStore.check_tenant` accepted them."""
    if not keys.enabled:
        return True
    key = keys.presented(headers)
    return key is not None and hash_key(key) in keys.admin


def _numbers_only(stats: Mapping[str, Any]) -> dict[str, Any]:
    """``stats`` keeping numbers (nested objects recursed) and dropping text and lists,
    which can name other tenants."""
    out: dict[str, Any] = {}
    for name, value in stats.items():
        if isinstance(value, Mapping):
            out[name] = _numbers_only(value)
        elif isinstance(value, (int, float)):
            out[name] = value
    return out


def add_shadow_routes(app: FastAPI, state: ModelHostState, keys: KeyStore,
                      mirror: ShadowMirror, store: ConfigStore) -> None:
    """Register the shadow routes on ``app``."""

    def describe(tenant_id: str, replica_wide: bool = True) -> dict[str, Any]:
        config = mirror.config(tenant_id)
        stats = mirror.stats()
        return {"tenant_id": tenant_id, "config": config.to_json() if config else None,
                "shadow_version": mirror.resolve(tenant_id),
                "production_version": state.snapshot.alias_version(tenant_id),
                "replica": stats if replica_wide else _numbers_only(stats)}

    @app.put("/v1/admin/tenants/{tenant_id}/shadow",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": ShadowBody.model_json_schema()}}}},
             responses=error_responses(
                 401, 403, 404, 422, s403="not the admin token",
                 s404="unknown tenant or version",
                 s422="invalid tenant id or shadow settings (the detail says what is wrong)"))
    async def put_shadow(tenant_id: TenantIdPath, request: Request) -> dict[str, Any]:
        """Shadow a tenant: which version, what fraction, until when (admin)."""
        validate_tenant_id(tenant_id)
        keys.check_admin(request.headers)
        try:
            body = ShadowBody.model_validate(json.loads(await request.body() or b"null"))
        except (ValueError, PydanticError) as exc:
            raise ValidationError(f"invalid shadow settings: {exc}".splitlines()[0]
                                  if not isinstance(exc, PydanticError)
                                  else f"invalid shadow settings: {_first_error(exc)}") from None
        await _check_target(state, tenant_id, body.version)
        config = build_config(tenant_id, body.fraction, body.version, body.start, body.until,
                              actor=_actor(keys), reason=body.reason)
        await asyncio.to_thread(store.set, config)
        mirror.apply(tenant_id, config)
        return describe(tenant_id)

    @app.delete("/v1/admin/tenants/{tenant_id}/shadow",
                responses=error_responses(401, 403, 422, s403="not the admin token",
                                          s422="invalid tenant id or body"))
    async def delete_shadow(tenant_id: TenantIdPath, request: Request) -> dict[str, Any]:
        """Stop shadowing a tenant (admin)."""
        validate_tenant_id(tenant_id)
        keys.check_admin(request.headers)
        reason = await _delete_reason(request)
        await asyncio.to_thread(store.clear, tenant_id, _actor(keys), reason)
        mirror.apply(tenant_id, None)
        return describe(tenant_id)

    @app.get("/v1/tenants/{tenant_id}/shadow",
             responses=error_responses(401, 403, 422, s422="invalid tenant id"))
    async def get_shadow(tenant_id: TenantIdPath, request: Request) -> dict[str, Any]:
        """The tenant's shadow config and this replica's shadow counters (a tenant key:
        the numbers only)."""
        validate_tenant_id(tenant_id)
        keys.check_tenant(request.headers, tenant_id)
        return describe(tenant_id, _sees_replica(keys, request.headers))


def _first_error(exc: PydanticError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "body"
    return f"{where}: {err.get('msg', 'invalid')}"
