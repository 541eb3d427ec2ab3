"""The error tree shared by every tenantry package (the bottom layer: no HTTP here).

The CLI prints an error's message as one line; the HTTP edge maps each class to a status
(:func:`engine.errors.http_status`, which also defines the errors only a web request
meets: credentials, media type, body size)::

    TenantryError
    ├── InvalidTenantId
    ├── ValidationError
    ├── NotFound
    │   ├── UnknownTenant
    │   └── UnknownVersion
    ├── Conflict
    │   └── RegistryConflict
    ├── RegistryError
    │   └── RegistryNotFound
    └── Unavailable
        ├── ChecksumMismatch
        ├── ModelLoadError
        │   └── ArtifactOutsideRoot
        └── ReplicaUnavailable
"""

from __future__ import annotations

__all__ = [
    "ArtifactOutsideRoot",
    "ChecksumMismatch",
    "Conflict",
    "InvalidTenantId",
    "ModelLoadError",
    "NotFound",
    "RegistryConflict",
    "RegistryError",
    "RegistryNotFound",
    "ReplicaUnavailable",
    "TenantryError",
    "Unavailable",
    "UnknownTenant",
    "UnknownVersion",
    "ValidationError",
]


class TenantryError(Exception):
    """Base of every error tenantry raises on purpose."""


class InvalidTenantId(TenantryError):
    """A tenant id that does not match the allowed pattern."""


class ValidationError(TenantryError):
    """Malformed user input (feature width, names, values, sizes)."""


class NotFound(TenantryError):
    """Something the caller named does not exist."""


class UnknownTenant(NotFound):
    """The tenant has no model (or no model under the requested alias)."""


class UnknownVersion(NotFound):
    """The tenant exists but not at that version."""


class Conflict(TenantryError):
    """The request conflicts with the current state."""


class RegistryConflict(Conflict):
    """A concurrent writer changed the registry index first."""


class RegistryError(TenantryError):
    """The registry could not be read or written."""


class RegistryNotFound(RegistryError):
    """No registry exists at the given root."""


class Unavailable(TenantryError):
    """A dependency is temporarily or permanently unable to answer."""


class ChecksumMismatch(Unavailable):
    """An artifact's bytes do not match the sha256 recorded in the index."""


class ModelLoadError(Unavailable):
    """An artifact could not be turned into a model."""


class ReplicaUnavailable(Unavailable):
    """A model-host replica died or cannot be reached."""


class ArtifactOutsideRoot(ModelLoadError):
    """An index row names an artifact outside this registry's root: refused, never read."""
