"""What an admin can do from the console: promote, rollback, shadow set and clear.

Each action records its actor and reason in the Delta log (the ``aliases`` table, or
``shadow/config``), exactly as the CLI and the admin API do. Actions run one at a time on
one long-lived :class:`Registry`, whose snapshot follows the index incrementally.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from engine.shadow.config import ConfigStore, build_config
from engine.shadow.tables import ShadowTables
from registry import Alias, Registry
from registry.errors import ValidationError

__all__ = ["Actions"]

MAX_REASON = 500


def _reason(reason: str | None) -> str:
    text = (reason or "").strip()
    if not text:
        raise ValidationError("say why (the reason is recorded in the audit trail)")
    if len(text) > MAX_REASON:
        raise ValidationError(f"the reason is longer than {MAX_REASON} characters")
    return text


class Actions:
    """Alias moves and shadow changes made from the console."""

    def __init__(self, registry: Registry, lock: threading.Lock | None = None) -> None:
        """Act on ``registry``, holding ``lock`` (shared with its other users) meanwhile."""
        self.registry = registry
        self._lock = lock or threading.Lock()

    def promote(self, tenant_id: str, version: int, alias: str, actor: str,
                reason: str | None) -> str:
        """Point ``alias`` at ``version``; returns what happened, for the page."""
        why = _reason(reason)
        with self._lock:
            mv = self.registry.promote(tenant_id, version, alias, reason=why, actor=actor)
        return f"{alias} → v{mv.version}"

    def rollback(self, tenant_id: str, actor: str, reason: str | None) -> str:
        """Move production back one version; returns what happened."""
        why = _reason(reason)
        with self._lock:
            mv = self.registry.rollback(tenant_id, actor=actor, reason=why)
        return f"production rolled back to v{mv.version}"

    def shadow_set(self, tenant_id: str, version: int | None, fraction: float,
                   until: str | None, actor: str, reason: str | None) -> str:
        """Mirror ``fraction`` of the tenant's requests to ``version`` (None: its shadow
        alias) until ``until``; refuses what ``tenantry shadow set`` refuses."""
        why = _reason(reason)
        with self._lock:
            snap = self.registry.snapshot()
            snap.versions(tenant_id)
            if version is not None:
                snap.version(tenant_id, version)
                if version == snap.alias_version(tenant_id, Alias.PRODUCTION):
                    raise ValidationError(f"v{version} is the production version: shadowing "
                                          "it compares production with itself")
            config = build_config(tenant_id, fraction, version, None, until or None,
                                  actor=actor, reason=why)
            if config.until is not None and config.until <= datetime.now(UTC):
                raise ValidationError(f"until {config.until.isoformat()} is already past")
            ConfigStore(ShadowTables.for_registry(self.registry)).set(config)
        target = f"v{version}" if version is not None else "the shadow alias"
        return f"mirroring {fraction:.0%} of requests to {target}"

    def shadow_clear(self, tenant_id: str, actor: str, reason: str | None) -> str:
        """Stop shadowing the tenant; returns what happened."""
        why = _reason(reason)
        with self._lock:
            self.registry.snapshot().versions(tenant_id)
            ConfigStore(ShadowTables.for_registry(self.registry)).clear(tenant_id, actor, why)
        return "shadow mirroring cleared"
