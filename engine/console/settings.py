"""Console configuration: one typed object from ``TENANTRY_*`` variables (read by
:func:`registry.settings.read_env`) and the command's flags."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.settings import is_loopback
from registry.settings import process_env, read_env

__all__ = ["ConsoleSettings"]

_ENV = {  # field -> environment variable
    "registry": ("TENANTRY_REGISTRY",),
    "host": ("TENANTRY_CONSOLE_HOST",),
    "port": ("TENANTRY_CONSOLE_PORT",),
    "api_keys_file": ("TENANTRY_CONSOLE_API_KEYS",),
    "reports_dir": ("TENANTRY_CONSOLE_REPORTS",),
    "refresh_s": ("TENANTRY_CONSOLE_REFRESH_S",),
}


@dataclass(frozen=True)
class ConsoleSettings:
    """Everything ``tenantry console`` needs to know."""

    registry: str = "./tenantry-data/registry"
    """Registry root (path or ``s3://``); ``TENANTRY_REGISTRY``."""
    host: str = "127.0.0.1"
    """Address the console binds; ``TENANTRY_CONSOLE_HOST``. A non-loopback address needs
    API keys or ``allow_anonymous``."""
    port: int = 8090
    """Port the console binds; ``TENANTRY_CONSOLE_PORT``."""
    api_keys_file: str = ""
    """Hashed API key file (``tenantry apikey``); ``TENANTRY_CONSOLE_API_KEYS``. With it,
    pages need a key (a tenant key sees only its tenant) and actions the admin token;
    without it the console is read-only."""
    allow_anonymous: bool = False
    """Bind a non-loopback address without API keys (refused otherwise)."""
    reports_dir: str = ""
    """Folder searched for ``tenantry loadtest`` reports (``loadtest.json`` files, two
    levels deep); ``TENANTRY_CONSOLE_REPORTS``."""
    refresh_s: float = 1.0
    """How often the in-memory tenant index follows the registry (seconds)."""
    page_size: int = 50
    """Tenants per page unless the page asks for another size (at most 500)."""
    max_form_bytes: int = 16384
    """Largest form body an action accepts (else 413)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ConsoleSettings:
        """Defaults, then ``TENANTRY_*`` variables, then non-None ``overrides``.

        Args:
            env: the environment ``main`` read (None: this process's).
            overrides: field values that win over the environment; None means unset.

        Raises:
            ValidationError: a variable that does not parse as its field's type.
        """
        values = read_env(cls, _ENV, process_env(env))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def exposure_problem(self) -> str:
        """Why serving the console with these settings would be open to the network, or
        ``""`` (the same rule as ``tenantry serve``)."""
        if self.api_keys_file or self.allow_anonymous or is_loopback(self.host):
            return ""
        return (f"refusing to serve the console on {self.host!r} without API keys: pass "
                "--api-keys FILE (see `tenantry apikey`), bind 127.0.0.1, or pass "
                "--allow-anonymous")

