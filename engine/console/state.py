"""What every console page shares: the :class:`Console` (registry, tenant index, key rules,
actions, templates) and how it is built from the settings."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from engine.console.actions import Actions
from engine.console.auth import ConsoleAuth
from engine.console.index import TenantIndex
from engine.console.settings import ConsoleSettings
from engine.serving.auth import KeyStore
from registry import Registry

__all__ = ["Console", "build_console"]


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


def build_console(settings: ConsoleSettings, keys: KeyStore | None = None,
                  storage_options: Mapping[str, str] | None = None) -> Console:
    """Open the registry (``storage_options`` reach an object store) and build the console
    (the index is loaded once here).

    Raises:
        RegistryNotFound: there is no registry at ``settings.registry``.
        ValidationError: the key file cannot be read.
    """
    registry = Registry.open(settings.registry, storage_options)
    lock = threading.Lock()
    keys = keys if keys is not None else KeyStore.load(settings.api_keys_file)
    # One snapshot, refreshed incrementally, serves the index and the actions alike.
    index = TenantIndex(registry.snapshot(refresh=False), settings.refresh_s, lock=lock)
    index.refresh()
    return Console(settings, registry, index, ConsoleAuth(keys), Actions(registry, lock),
                   _templates(), lock)
