"""Optional API keys: a tenant key may call only its own tenant; admin routes need an
admin token. Keys are stored as sha256 hex digests, never in clear.

Key file (JSON)::

    {"tenants": {"<sha256 of key>": "acme", …}, "admin": ["<sha256 of token>", …]}
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from registry.errors import Forbidden, Unauthorized, ValidationError

__all__ = ["KeyStore", "hash_key", "new_key", "add_key"]


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random key (shown once to the user)."""
    return "tnt_" + secrets.token_urlsafe(24)


@dataclass(frozen=True)
class KeyStore:
    """Hashed keys; ``enabled`` False means every call is allowed."""

    tenants: Mapping[str, str] = field(default_factory=dict)
    admin: frozenset[str] = frozenset()
    enabled: bool = False

    @classmethod
    def load(cls, path: str) -> KeyStore:
        """Read a key file; an empty path disables auth."""
        if not path:
            return cls()
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ValidationError(f"cannot read API key file {path}: {exc}") from exc
        return cls(dict(doc.get("tenants", {})), frozenset(doc.get("admin", [])), True)

    @staticmethod
    def presented(headers: Mapping[str, str]) -> str | None:
        """The key a request carries (``Authorization: Bearer`` or ``x-api-key``)."""
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return headers.get("x-api-key")

    def check_tenant(self, headers: Mapping[str, str], tenant_id: str) -> None:
        """Allow the call if the key belongs to ``tenant_id`` (or is an admin token)."""
        if not self.enabled:
            return
        key = self.presented(headers)
        if not key:
            raise Unauthorized("missing API key (Authorization: Bearer <key>)")
        digest = hash_key(key)
        if digest in self.admin:
            return
        owner = self.tenants.get(digest)
        if owner is None:
            raise Unauthorized("unknown API key")
        if owner != tenant_id:
            raise Forbidden(f"this API key may not call tenant {tenant_id!r}")

    def check_admin(self, headers: Mapping[str, str]) -> None:
        """Allow the call only with an admin token."""
        if not self.enabled:
            return
        key = self.presented(headers)
        if not key:
            raise Unauthorized("missing admin token (Authorization: Bearer <token>)")
        if hash_key(key) not in self.admin:
            raise Forbidden("admin token required")


def add_key(path: str, tenant_id: str | None) -> str:
    """Create a key for ``tenant_id`` (None: an admin token), store its hash, return it."""
    file = Path(path)
    doc = json.loads(file.read_text()) if file.exists() else {"tenants": {}, "admin": []}
    key = new_key()
    if tenant_id is None:
        doc.setdefault("admin", []).append(hash_key(key))
    else:
        doc.setdefault("tenants", {})[hash_key(key)] = tenant_id
    file.write_text(json.dumps(doc, indent=2))
    return key
