"""Sharded model registry: immutable artifacts + a Delta Lake index with aliases."""

from __future__ import annotations

from registry.ids import ModelKey, TenantId, shard_of, validate_tenant_id

__all__ = ["ModelKey", "TenantId", "shard_of", "validate_tenant_id"]
