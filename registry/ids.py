"""Tenant ids, model keys and the stable shard function."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from registry.errors import InvalidTenantId, ValidationError

__all__ = ["COMPANION_NAME", "TENANT_ID_PATTERN", "ModelKey", "shard_of",
           "validate_companion_name", "validate_tenant_id"]

TENANT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

COMPANION_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\.arrow")
"""Names of the files staged beside an artifact (e.g. ``forest-v1.arrow``); the registry's
own files (``model.ubj``, ``model.ubj.sha256``, ``_claim.json``) never match."""


def validate_companion_name(name: str) -> str:
    """Return ``name`` if a file staged beside an artifact may have it.

    Raises:
        ValidationError: not a :data:`COMPANION_NAME` (no path separators, ``*.arrow``).
    """
    if not COMPANION_NAME.fullmatch(name):
        raise ValidationError(f"invalid companion file name {name!r}")
    return name


def validate_tenant_id(tenant_id: object) -> str:
    """Return ``tenant_id`` if it is a valid tenant id, before any I/O touches it.

    Args:
        tenant_id: the candidate id (anything; non-strings are refused).

    Returns:
        The same string.

    Raises:
        InvalidTenantId: not a string, empty, longer than 64 characters, or containing a
            character outside ``[A-Za-z0-9._-]`` (or starting with ``.``, ``_`` or ``-``).
    """
    # fullmatch with \Z semantics: "$" alone would accept a trailing newline.
    if not isinstance(tenant_id, str) or TENANT_ID_PATTERN.fullmatch(tenant_id) is None \
            or tenant_id.endswith("\n"):
        shown = repr(tenant_id)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise InvalidTenantId(
            f"invalid tenant id {shown}: expected 1-64 characters of letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return tenant_id


def shard_of(tenant_id: str, num_shards: int) -> int:
    """Stable shard of a tenant: first 8 bytes of sha256(tenant id) modulo ``num_shards``.

    Unlike Python's ``hash``, this is the same in every process and on every machine.

    Args:
        tenant_id: a valid tenant id.
        num_shards: the registry's shard count (fixed at creation).

    Returns:
        An int in ``[0, num_shards)``.
    """
    if num_shards < 1:
        raise ValueError("num_shards must be >= 1")
    digest = hashlib.sha256(tenant_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


@dataclass(frozen=True, slots=True, order=True)
class ModelKey:
    """One immutable model: a tenant at a version."""

    tenant_id: str
    version: int

    def __str__(self) -> str:
        return f"{self.tenant_id}@v{self.version}"
