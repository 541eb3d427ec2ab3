"""Registry configuration, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from registry.storage import storage_options_from_env

__all__ = ["RegistrySettings", "DEFAULT_ROOT"]

DEFAULT_ROOT = "./tenantry-data/registry"


@dataclass(frozen=True)
class RegistrySettings:
    """Where the registry lives and how to reach an object store."""

    root: str = DEFAULT_ROOT
    """Registry root: a local path or ``s3://bucket/prefix`` (``TENANTRY_REGISTRY``)."""
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    """The AWS_* variables seen at start, for object-store credentials and endpoint."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RegistrySettings:
        """Read ``TENANTRY_REGISTRY`` and the usual AWS variables."""
        env = dict(os.environ if environ is None else environ)
        aws = {k: v for k, v in env.items() if k.startswith("AWS_")}
        return cls(root=env.get("TENANTRY_REGISTRY", DEFAULT_ROOT), env=aws)

    def storage_options(self, root: str | None = None) -> dict[str, str]:
        """deltalake/pyarrow storage options for ``root`` (default: this root)."""
        return storage_options_from_env(root or self.root, self.env)
