"""Error hierarchy shared by every tenantry package.

Each class carries the HTTP status the API answers with, so one FastAPI handler maps
them all, and the CLI prints their message as one line::

    TenantryError (500)
    ├── InvalidTenantId (422)
    ├── ValidationError (422)
    ├── UnsupportedMediaType (415)
    ├── NotFound (404)
    │   ├── UnknownTenant (404)
    │   └── UnknownVersion (404)
    ├── Forbidden (403)
    ├── Unauthorized (401)
    ├── Conflict (409)
    │   └── RegistryConflict (409)
    ├── RegistryError (500)
    │   └── RegistryNotFound (404)
    └── Unavailable (503)
        ├── ChecksumMismatch (503)
        ├── ModelLoadError (503)
        └── ReplicaUnavailable (503)
"""

from __future__ import annotations

__all__ = [
    "ChecksumMismatch",
    "Conflict",
    "Forbidden",
    "InvalidTenantId",
    "ModelLoadError",
    "NotFound",
    "RegistryConflict",
    "RegistryError",
    "RegistryNotFound",
    "ReplicaUnavailable",
    "TenantryError",
    "Unauthorized",
    "Unavailable",
    "UnknownTenant",
    "UnknownVersion",
    "UnsupportedMediaType",
    "ValidationError",
]


class TenantryError(Exception):
    """Base of every error tenantry raises on purpose."""

    status_code: int = 500


class InvalidTenantId(TenantryError):
    """A tenant id that does not match the allowed pattern."""

    status_code = 422


class ValidationError(TenantryError):
    """Malformed user input (feature width, names, values, sizes)."""

    status_code = 422


class UnsupportedMediaType(TenantryError):
    """A request body in a format the route does not read (e.g. not JSON)."""

    status_code = 415


class NotFound(TenantryError):
    """Something the caller named does not exist."""

    status_code = 404


class UnknownTenant(NotFound):
    """The tenant has no model (or no model under the requested alias)."""


class UnknownVersion(NotFound):
    """The tenant exists but not at that version."""


class Forbidden(TenantryError):
    """The caller is authenticated but may not do this."""

    status_code = 403


class Unauthorized(TenantryError):
    """The caller did not present valid credentials."""

    status_code = 401


class Conflict(TenantryError):
    """The request conflicts with the current state."""

    status_code = 409


class RegistryConflict(Conflict):
    """A concurrent writer changed the registry index first."""


class RegistryError(TenantryError):
    """The registry could not be read or written."""


class RegistryNotFound(RegistryError):
    """No registry exists at the given root."""

    status_code = 404


class Unavailable(TenantryError):
    """A dependency is temporarily or permanently unable to answer."""

    status_code = 503


class ChecksumMismatch(Unavailable):
    """An artifact's bytes do not match the sha256 recorded in the index."""


class ModelLoadError(Unavailable):
    """An artifact could not be turned into a model."""


class ReplicaUnavailable(Unavailable):
    """A model-host replica died or cannot be reached."""


class ArtifactOutsideRoot(ModelLoadError):
    """An index row names an artifact outside this registry's root: refused, never read."""
