"""Who may read and who may act in the console.

Without a key file every page is open (bind loopback, or pass ``--allow-anonymous``) and
the console is read-only. With ``--api-keys FILE`` (the ``tenantry apikey`` file serving
uses) pages need a key -- HTTP Basic with the key as password, ``Authorization: Bearer``
or ``x-api-key`` -- and a tenant key sees only its own tenant; promote, rollback and shadow
set/clear need the admin token.

CSRF: actions are POST only and take the admin token from the form field ``admin_token``
or an ``Authorization: Bearer`` header, never from a cookie or the Basic credentials a
browser replays by itself. The console keeps no session, so a page of another site can make
a browser send a form here but cannot put the token in it. A POST whose ``Origin`` names
another host is refused as well.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from engine.errors import Forbidden, Unauthorized
from engine.serving.auth import KeyStore, hash_key

__all__ = ["ADMIN", "ConsoleAuth", "Viewer"]

ADMIN = "admin"
"""The actor the audit trail records for an admin token."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is reading: everyone (no keys), the admin, or one tenant's key."""

    name: str  # "anonymous", "admin" or the tenant id
    tenant: str | None = None  # set for a tenant key: the only tenant it may see

    @property
    def sees_all(self) -> bool:
        """True unless this is a tenant key."""
        return self.tenant is None


class ConsoleAuth:
    """The console's read and write rules over a :class:`KeyStore`."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    @property
    def writable(self) -> bool:
        """Whether any admin token exists, so actions can be allowed at all."""
        return self.keys.enabled and bool(self.keys.admin)

    def viewer(self, headers: Mapping[str, str]) -> Viewer:
        """The reader of a page.

        Raises:
            Unauthorized: keys are on and the request carries no known key.
        """
        if not self.keys.enabled:
            return Viewer("anonymous")
        key = _basic_password(headers) or KeyStore.presented(headers)
        if not key:
            raise Unauthorized("this console needs an API key (HTTP Basic password, or "
                               "Authorization: Bearer <key>)")
        digest = hash_key(key)
        if digest in self.keys.admin:
            return Viewer(ADMIN)
        tenant = self.keys.tenants.get(digest)
        if tenant is None:
            raise Unauthorized("unknown API key")
        return Viewer(tenant, tenant)

    @staticmethod
    def check_read(viewer: Viewer, tenant_id: str | None = None) -> None:
        """Allow ``viewer`` to see ``tenant_id`` (None: a page naming many tenants).

        Raises:
            Forbidden: a tenant key asked for another tenant or an all-tenants page.
        """
        if viewer.tenant is not None and tenant_id != viewer.tenant:
            raise Forbidden(f"this API key may see only tenant {viewer.tenant!r}")

    def admin_actor(self, headers: Mapping[str, str], form_token: str | None) -> str:
        """The actor of an action, once its admin token checks out.

        Args:
            headers: the request headers (``Authorization: Bearer``, ``Origin``, ``Host``).
            form_token: the form's ``admin_token`` field.

        Raises:
            Forbidden: the console has no admin token (read-only), the token is not an
                admin token, or the form came from another origin.
            Unauthorized: no token was given.
        """
        origin = headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != headers.get("host"):
            raise Forbidden(f"refusing a form posted from another origin ({origin})")
        if not self.writable:
            raise Forbidden("this console is read-only: start it with --api-keys FILE holding "
                            "an admin token (tenantry apikey --admin --file FILE)")
        auth = headers.get("authorization", "")
        token = form_token or (auth[7:].strip() if auth.lower().startswith("bearer ") else "")
        if not token:
            raise Unauthorized("the admin token is required (form field admin_token or "
                               "Authorization: Bearer <token>)")
        if hash_key(token) not in self.keys.admin:
            raise Forbidden("admin token required")
        return ADMIN


def _basic_password(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if not auth.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2] or None
