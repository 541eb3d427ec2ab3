"""How a shard's tenants split into bucket parts (a training, scoring or monitoring bucket
is one part of one shard, or of the whole table when it is scanned)."""

from __future__ import annotations

import hashlib

__all__ = ["bucket_part"]


def bucket_part(tenant_id: str, parts: int) -> int:
    """Which part of its shard a tenant falls in (independent of the shard hash)."""
    if parts == 1:
        return 0
    digest = hashlib.blake2b(tenant_id.encode(), digest_size=8, person=b"tnt-part").digest()
    return int.from_bytes(digest, "big") % parts
