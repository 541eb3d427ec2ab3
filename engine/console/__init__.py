"""The web console: server-rendered pages over the registry and its Delta tables.

``tenantry console`` serves :func:`create_app`: tenants (from an in-memory index that
follows the registry snapshot), a tenant (versions, metrics chart, alias moves with who,
when and why, drift, shadow), nightly runs and capacity reports; admins promote, roll
back and shadow from it with the admin token.
"""

from __future__ import annotations

from engine.console.app import Console, build_console, create_app
from engine.console.index import TenantIndex
from engine.console.settings import ConsoleSettings

__all__ = ["Console", "ConsoleSettings", "TenantIndex", "build_console", "create_app"]
