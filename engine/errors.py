"""The errors of the HTTP edge, and the HTTP status of every tenantry error.

The error tree itself lives at the bottom (:mod:`registry.errors`) and knows nothing of
HTTP; the errors only a web request can meet (no or a wrong key, a body in another format
or over a limit) are defined here, and :func:`http_status` maps any error to the status the
model hosts, the ingress control app and the console answer with (the CLI turns the same
map into exit codes)::

    TenantryError                       500
    ├── InvalidTenantId, ValidationError 422
    ├── NotFound (UnknownTenant, UnknownVersion), RegistryNotFound   404
    ├── Conflict (RegistryConflict)     409
    ├── Unavailable (ChecksumMismatch, ModelLoadError, ReplicaUnavailable)   503
    ├── Unauthorized                    401   (here)
    ├── Forbidden                       403   (here)
    ├── UnsupportedMediaType            415   (here)
    └── PayloadTooLarge                 413   (here)
"""

from __future__ import annotations

from registry.errors import (
    Conflict,
    InvalidTenantId,
    NotFound,
    RegistryNotFound,
    TenantryError,
    Unavailable,
    ValidationError,
)

__all__ = ["Forbidden", "PayloadTooLarge", "Unauthorized", "UnsupportedMediaType",
           "http_status"]


class Unauthorized(TenantryError):
    """The caller did not present valid credentials."""


class Forbidden(TenantryError):
    """The caller is authenticated but may not do this."""


class UnsupportedMediaType(TenantryError):
    """A request body in a format the route does not read (e.g. not JSON)."""


class PayloadTooLarge(TenantryError):
    """A request body over a route's limit."""


_STATUS: dict[type[BaseException], int] = {
    InvalidTenantId: 422, ValidationError: 422, NotFound: 404, RegistryNotFound: 404,
    Conflict: 409, Unavailable: 503, Unauthorized: 401, Forbidden: 403,
    UnsupportedMediaType: 415, PayloadTooLarge: 413,
}


def http_status(exc: BaseException) -> int:
    """The HTTP status of ``exc``: that of its nearest class in the map, else 500."""
    for cls in type(exc).__mro__:
        status = _STATUS.get(cls)
        if status is not None:
            return status
    return 500
