"""Optional API keys: a tenant key may call only its own tenant; admin routes need an
admin token. Keys are stored as sha256 hex digests, never in clear.

Key file (JSON, mode 0600)::

    {"tenants": {"<sha256 of key>": "acme", …}, "admin": ["<sha256 of token>", …]}

Writers (:func:`add_key`, :func:`revoke_key`) hold an exclusive ``flock`` on the side file
``<file>.lock`` for their whole read-modify-write, and replace the file atomically (temp
file in the same directory, then ``os.replace``), so concurrent writers never lose each
other's keys and readers never see a half-written file. A :class:`KeyStore` loaded from a
file re-reads it when its identity, size or modification time changes, checking at most
once per second, so a revoked key stops working within about a second, without a redeploy.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import Forbidden, Unauthorized
from registry.errors import NotFound, ValidationError

__all__ = ["KeyStore", "add_key", "hash_key", "new_key", "revoke_key"]

Clock = Callable[[], float]


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random key (shown once to the user)."""
    return "tnt_" + secrets.token_urlsafe(24)


@dataclass(frozen=True)
class _Keys:
    """One consistent generation of the key file's contents."""

    tenants: Mapping[str, str]
    admin: frozenset[str]


def _parse(path: str) -> _Keys:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        return _Keys(dict(doc.get("tenants", {})), frozenset(doc.get("admin", [])))
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise ValidationError(f"cannot read API key file {path}: {exc}") from exc


def _signature(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class KeyStore:
    """Hashed keys, kept in step with their file; ``enabled`` False lets every call through."""

    def __init__(self, tenants: Mapping[str, str] | None = None, admin: Iterable[str] = (),
                 enabled: bool = False, *, path: str | None = None,
                 check_every_s: float = 1.0, clock: Clock = time.monotonic) -> None:
        self._keys = _Keys(dict(tenants or {}), frozenset(admin))
        self.enabled = enabled
        self.path = path
        self.check_every_s = check_every_s
        self.reload_errors = 0
        self._clock = clock
        self._next_check = clock() + check_every_s
        self._signature: tuple[int, int, int, int] | None = None

    @classmethod
    def load(cls, path: str, check_every_s: float = 1.0) -> KeyStore:
        """Read a key file and follow its changes; an empty path disables auth.

        Raises:
            ValidationError: the file cannot be read or is not a key file.
        """
        if not path:
            return cls()
        try:
            signature = _signature(path)
        except OSError as exc:
            raise ValidationError(f"cannot read API key file {path}: {exc}") from exc
        keys = _parse(path)
        store = cls(keys.tenants, keys.admin, True, path=path, check_every_s=check_every_s)
        store._signature = signature
        return store

    @property
    def tenants(self) -> Mapping[str, str]:
        """Key digest -> tenant, as of the last (re)load."""
        return self._current().tenants

    @property
    def admin(self) -> frozenset[str]:
        """Admin token digests, as of the last (re)load."""
        return self._current().admin

    def _current(self) -> _Keys:
        """The keys, re-read first if the file changed (a stat at most every interval)."""
        if self.path is None:
            return self._keys
        now = self._clock()
        if now < self._next_check:
            return self._keys
        self._next_check = now + self.check_every_s
        try:
            signature = _signature(self.path)
            if signature != self._signature:
                self._keys = _parse(self.path)
                self._signature = signature
        except (OSError, ValidationError):
            # A missing or unreadable file keeps the last good keys (writers replace it
            # atomically, so this is an operator removing it, not a half-written file).
            self.reload_errors += 1
        return self._keys

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
        keys = self._current()
        digest = hash_key(key)
        if digest in keys.admin:
            return
        owner = keys.tenants.get(digest)
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
        if hash_key(key) not in self._current().admin:
            raise Forbidden("admin token required")


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (the key file itself gets replaced)."""
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _read_doc(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return {"tenants": {}, "admin": []}
    except (OSError, ValueError) as exc:
        raise ValidationError(f"cannot read API key file {path}: {exc}") from exc
    doc.setdefault("tenants", {})
    doc.setdefault("admin", [])
    return doc


def _write_doc(path: str, doc: Mapping[str, Any]) -> None:
    """Replace ``path`` atomically with ``doc``, readable by its owner only."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".keys-", suffix=".tmp", dir=directory)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable where directories fsync
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def add_key(path: str, tenant_id: str | None) -> str:
    """Create a key for ``tenant_id`` (None: an admin token), store its hash, return it.

    Raises:
        ValidationError: the existing file is not a readable key file.
    """
    key = new_key()
    with _locked(path):
        doc = _read_doc(path)
        if tenant_id is None:
            doc["admin"].append(hash_key(key))
        else:
            doc["tenants"][hash_key(key)] = tenant_id
        _write_doc(path, doc)
    return key


def revoke_key(path: str, tenant_id: str | None) -> int:
    """Remove every key of ``tenant_id`` (None: every admin token); returns how many.

    Live :class:`KeyStore` objects reading the file stop accepting them within a second
    or so of this call.

    Raises:
        NotFound: the file holds no such key.
        ValidationError: the file is not a readable key file.
    """
    with _locked(path):
        doc = _read_doc(path)
        if tenant_id is None:
            removed = len(doc["admin"])
            doc["admin"] = []
        else:
            kept = {h: t for h, t in doc["tenants"].items() if t != tenant_id}
            removed = len(doc["tenants"]) - len(kept)
            doc["tenants"] = kept
        if removed == 0:
            what = "admin token" if tenant_id is None else f"API key for tenant {tenant_id!r}"
            raise NotFound(f"no {what} in {path}")
        _write_doc(path, doc)
    return removed
