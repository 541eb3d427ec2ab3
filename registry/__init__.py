"""Sharded model registry: immutable artifacts + a Delta Lake index with aliases."""

from __future__ import annotations

from registry.errors import ChecksumMismatch, RegistryNotFound, TenantryError
from registry.ids import ModelKey, shard_of, validate_tenant_id
from registry.registry import Registry, validate_run_id
from registry.settings import RegistrySettings
from registry.snapshot import RegistrySnapshot
from registry.types import (
    Alias,
    AliasMove,
    ModelVersion,
    NewVersion,
    PublishResult,
    PublishState,
    StagedArtifact,
    TenantModels,
    TenantSummary,
)

__all__ = [
    "Alias", "AliasMove", "ChecksumMismatch", "ModelKey", "ModelVersion", "NewVersion",
    "PublishResult", "PublishState", "Registry", "RegistryNotFound", "RegistrySettings",
    "RegistrySnapshot", "StagedArtifact", "TenantModels", "TenantSummary",
    "TenantryError", "shard_of", "validate_run_id", "validate_tenant_id",
]
