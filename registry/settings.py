"""Registry configuration, read once from the environment.

On ``s3://`` roots the usual AWS variables apply: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``)
and ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for S3-compatible servers. Without
keys, each client uses its default credential chain (e.g. the EC2 instance profile).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from registry.storage import storage_options_from_env

__all__ = ["DEFAULT_ROOT", "RegistrySettings"]

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
        """Read ``TENANTRY_REGISTRY`` and the usual AWS variables.

        Args:
            environ: the environment to read (default: ``os.environ``, read once here).

        Returns:
            Settings holding the root and a copy of the ``AWS_*`` variables.
        """
        env = dict(os.environ if environ is None else environ)
        aws = {k: v for k, v in env.items() if k.startswith("AWS_")}
        return cls(root=env.get("TENANTRY_REGISTRY", DEFAULT_ROOT), env=aws)

    def storage_options(self, root: str | None = None) -> dict[str, str]:
        """deltalake/pyarrow storage options for ``root`` (default: this root).

        Args:
            root: a registry root; local paths get no options.

        Returns:
            Options for :class:`registry.Registry` (Delta index and artifact store).
        """
        return storage_options_from_env(root or self.root, self.env)
