"""Reading the registry: versions and aliases (from the snapshot), the alias log, profiles,
metric trends, and verified artifacts. :class:`RegistryReading` is a part of
:class:`registry.registry.Registry`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from registry.delta import sql_str
from registry.errors import ArtifactOutsideRoot, ChecksumMismatch, ModelLoadError, ValidationError
from registry.ids import validate_companion_name, validate_tenant_id
from registry.index import DeltaIndex, profiles_from_rows
from registry.types import (
    ModelProfile,
    ModelVersion,
    StagedArtifact,
    TenantModels,
    TenantSummary,
    TrendPoint,
)

if TYPE_CHECKING:
    from registry.snapshot import RegistrySnapshot
    from registry.storage import ArtifactStore

__all__ = ["AliasEvent", "RegistryReading", "booster_from_bytes"]


@dataclass(frozen=True, slots=True)
class AliasEvent:
    """One row of the ``aliases`` log: an alias moved, by whom, when and why.

    ``actor`` is the OS user for the CLI, ``"admin"`` for the admin API and the console,
    and None for moves made by a training run (``run_id`` says which) or written before
    the column existed.
    """

    tenant_id: str
    alias: str
    action: str  # set | rollback | clear
    version: int | None
    actor: str | None
    reason: str | None
    run_id: str | None
    at: datetime | None
    commit_version: int | None

    def to_json(self) -> dict[str, Any]:
        """The EVENT document of ``registry history --events --json``."""
        return {"tenant_id": self.tenant_id, "alias": self.alias, "action": self.action,
                "version": self.version, "actor": self.actor, "reason": self.reason,
                "run_id": self.run_id, "at": self.at.isoformat() if self.at else None,
                "commit_version": self.commit_version}



class RegistryReading:
    """Lookups and verified artifact reads (a part of ``Registry``)."""

    if TYPE_CHECKING:  # provided by Registry
        store: ArtifactStore

        @property
        def index(self) -> DeltaIndex: ...

        def snapshot(self, refresh: bool = True) -> RegistrySnapshot: ...

        def shard_of(self, tenant_id: str) -> int: ...

    def get(self, tenant_id: str) -> TenantModels:
        """Production and shadow versions of a tenant."""
        return self.snapshot().tenant_models(validate_tenant_id(tenant_id))

    def history(self, tenant_id: str) -> list[ModelVersion]:
        """Every version of a tenant, newest first."""
        return self.snapshot().versions(validate_tenant_id(tenant_id))

    def alias_events(self, tenant_id: str) -> list[AliasEvent]:
        """Every alias move of a tenant (who, when, why), newest first, in commit order.

        Reads the ``aliases`` table (its tenant's shard only); not for a request path.
        """
        validate_tenant_id(tenant_id)
        where = f"shard = {self.shard_of(tenant_id)} AND tenant_id = {sql_str(tenant_id)}"
        rows = self.index.query("aliases", where).to_pylist()
        rows.sort(key=lambda r: (-1 if r.get("commit_version") is None
                                 else int(r["commit_version"]), r["set_at"]), reverse=True)
        return [AliasEvent(r["tenant_id"], r["alias"], r["action"], r["version"],
                           r.get("actor"), r.get("reason"), r.get("run_id"), r.get("set_at"),
                           r.get("commit_version")) for r in rows]

    def profiles(self, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], ModelProfile]:
        """Reference profiles of the versions ``keys`` (``(tenant_id, version)``) that have one.

        Reads the ``profiles`` table (the keys' shards only); not for a request path.
        """
        keys = [(validate_tenant_id(t), int(v)) for t, v in keys]
        if not keys or not self.index.exists("profiles"):
            return {}
        shards = sorted({self.shard_of(t) for t, _ in keys})
        tenants = ", ".join(sql_str(t) for t in sorted({t for t, _ in keys}))
        where = f"shard IN ({', '.join(map(str, shards))}) AND tenant_id IN ({tenants})"
        found = profiles_from_rows(self.index.query("profiles", where))
        return {k: found[k] for k in keys if k in found}

    def trend(self, tenant_id: str, metric: str = "auc") -> list[TrendPoint]:
        """One metric of every version of a tenant, oldest first: the nightly history.

        Raises:
            UnknownTenant: no such tenant.
            ValidationError: no version of the tenant records ``metric``.
        """
        versions = self.history(tenant_id)
        if not any(metric in v.metrics for v in versions):
            known = sorted({k for v in versions for k in v.metrics})
            raise ValidationError(f"no version of {tenant_id!r} records metric {metric!r} "
                                  f"(they record: {', '.join(known) or 'nothing'})")
        return [TrendPoint(v.version, v.data_date, v.metrics.get(metric), v.run_id,
                           v.created_at) for v in reversed(versions)]

    def list_tenants(self) -> list[TenantSummary]:
        """One summary per tenant."""
        return self.snapshot().summaries()

    def production_versions(self) -> dict[str, ModelVersion]:
        """tenant -> current production version."""
        return self.snapshot().production_map()

    def artifact_path(self, mv: ModelVersion | StagedArtifact) -> str:
        """Where the artifact lives, relative to this registry's root.

        Raises:
            ArtifactOutsideRoot: the recorded location is outside this root (an absolute
                row written before artifact paths were relative, in a registry that was
                copied or moved since): reading it would read another registry's file.
        """
        rel = self.store.relative(mv.artifact_uri)
        if rel is None:
            raise ArtifactOutsideRoot(
                f"artifact of {mv.tenant_id}@v{mv.version} is recorded at {mv.artifact_uri}, "
                f"outside this registry ({self.store.uri('')}); refusing to read another "
                "registry's file")
        return rel

    def read_artifact(self, mv: ModelVersion | StagedArtifact) -> bytes:
        """The artifact's bytes, verified against the recorded sha256.

        Raises:
            ArtifactOutsideRoot: the recorded location is outside this registry's root.
            ChecksumMismatch: the bytes differ from what the index recorded.
            ModelLoadError: the artifact is missing (e.g. removed by ``gc``).
        """
        try:
            data = self.store.read(self.artifact_path(mv))
        except FileNotFoundError:
            raise ModelLoadError(f"artifact of {mv.tenant_id}@v{mv.version} is missing") from None
        except OSError as exc:
            raise ModelLoadError(f"cannot read artifact of {mv.tenant_id}@v{mv.version}: "
                                 f"{exc}") from exc
        if hashlib.sha256(data).hexdigest() != mv.sha256:
            raise ChecksumMismatch(f"artifact of {mv.tenant_id}@v{mv.version} fails its sha256 "
                                   f"check (expected {mv.sha256[:12]}…)")
        return data

    def read_companion(self, mv: ModelVersion, name: str) -> bytes | None:
        """A file staged beside the artifact (``stage_artifact(files=…)``), or None if the
        version has none of that name or it cannot be read. Unverified: the index records
        only the artifact's checksum, so the caller checks what it reads.

        Raises:
            ArtifactOutsideRoot: the recorded location is outside this registry's root.
            ValidationError: ``name`` is not a companion file's name.
        """
        validate_companion_name(name)
        vdir = self.artifact_path(mv).rpartition("/")[0]
        try:
            return self.store.read(f"{vdir}/{name}")
        except OSError:  # missing (published before companions, or by hand) or unreadable
            return None

    def load_booster(self, mv: ModelVersion | StagedArtifact) -> Any:
        """An ``xgboost.Booster`` loaded from the verified artifact."""
        return booster_from_bytes(self.read_artifact(mv), f"{mv.tenant_id}@v{mv.version}")



def booster_from_bytes(data: bytes, label: str) -> Any:
    """An ``xgboost.Booster`` (one thread) from artifact bytes already verified.

    Raises:
        ModelLoadError: the bytes are not a valid XGBoost model.
    """
    import xgboost as xgb

    booster = xgb.Booster(params={"nthread": 1})
    try:
        booster.load_model(bytearray(data))
    except xgb.core.XGBoostError as exc:
        raise ModelLoadError(f"artifact of {label} is not a valid XGBoost model: "
                             f"{str(exc).splitlines()[0]}") from exc
    return booster

