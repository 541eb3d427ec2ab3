"""Errors of the training package, all :class:`registry.errors.TenantryError` subclasses::

    TenantryError
    ├── NotFound
    │   └── DataNotFound       no feature table at the path, or no rows for the date
    ├── ValidationError
    │   └── InvalidTrainingInput  a malformed date, window or option
    └── Conflict
        └── DataExists          the generator would overwrite an existing table
"""

from __future__ import annotations

from registry.errors import Conflict, NotFound, ValidationError

__all__ = ["DataExists", "DataNotFound", "InvalidTrainingInput"]


class DataNotFound(NotFound):
    """No feature table at the given path, or no rows for the requested date."""


class InvalidTrainingInput(ValidationError):
    """A malformed date, window size or option."""


class DataExists(Conflict):
    """The generator's output path already holds a table and overwrite was not asked for."""
