"""The registry: immutable per-tenant artifacts plus the Delta index, behind one class.

Layout below the root (a local path or ``s3://bucket/prefix``)::

    _tenantry.json                              format version, shard count
    artifacts/shard=NN/tenant=ID/v=N/_claim.json  which run claimed version N
    artifacts/shard=NN/tenant=ID/v=N/model.ubj    XGBoost UBJSON (never pickle)
    artifacts/shard=NN/tenant=ID/v=N/model.ubj.sha256
    index/models  index/aliases  index/runs     Delta tables
    index/profiles                              reference profiles for drift monitoring
    leases/RUN_ID.json                          a running run's lease (see registry.leases)

A version number is claimed by creating its ``_claim.json`` exclusively, so concurrent
writers never share one; it becomes visible only when the run's ``models`` commit lands.
``models`` rows record artifacts relative to the root, so a copied or moved registry reads
only its own files (older absolute rows are read only when they lie inside the root).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from registry.errors import (
    ArtifactOutsideRoot,
    ChecksumMismatch,
    Conflict,
    ModelLoadError,
    RegistryError,
    RegistryNotFound,
    ValidationError,
)
from registry.ids import shard_of, validate_tenant_id
from registry.index import DeltaIndex, RowsAt, profile_rows, profiles_from_rows, sql_str
from registry.leases import LeaseStore
from registry.settings import RegistrySettings
from registry.snapshot import RegistrySnapshot
from registry.storage import ArtifactStore
from registry.types import (
    Alias,
    AliasMove,
    ModelProfile,
    ModelVersion,
    NewVersion,
    PublishResult,
    PublishState,
    StagedArtifact,
    TenantModels,
    TenantSummary,
    TrendPoint,
)

__all__ = ["FORMAT_VERSION", "AliasEvent", "Registry", "booster_from_bytes", "validate_run_id"]

FORMAT_VERSION = 1
META_FILE = "_tenantry.json"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def validate_run_id(run_id: str) -> str:
    """Return ``run_id`` if valid; raise ValidationError otherwise."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ValidationError(f"invalid run id {run_id!r}: 1-128 of letters, digits, '._:-'")
    return run_id


def _now() -> datetime:
    return datetime.now(UTC)


def _tenant_dir(shard: int, tenant_id: str) -> str:
    return f"artifacts/shard={shard:02d}/tenant={tenant_id}"


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


class Registry:
    """A sharded model registry rooted at a path or object-store URI."""

    def __init__(self, root: str, num_shards: int,
                 storage_options: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.num_shards = num_shards
        self.storage_options = dict(storage_options or {})
        self.store = ArtifactStore(root, self.storage_options)
        self._index: DeltaIndex | None = None
        self._snapshot: RegistrySnapshot | None = None

    # -- lifecycle ----------------------------------------------------------------------
    @classmethod
    def create(cls, root: str, num_shards: int = 16,
               storage_options: Mapping[str, str] | None = None) -> Registry:
        """Create a registry (or open it if it exists with the same shard count).

        Raises:
            Conflict: a registry exists at ``root`` with a different shard count.
        """
        if num_shards < 1 or num_shards > 4096:
            raise ValidationError("num_shards must be between 1 and 4096")
        opts = storage_options if storage_options is not None else _env_options(root)
        store = ArtifactStore(root, opts)
        meta = {"format_version": FORMAT_VERSION, "num_shards": num_shards,
                "created_at": _now().isoformat()}
        if not store.create_exclusive(META_FILE, json.dumps(meta).encode()):
            existing = cls.open(root, opts)
            if existing.num_shards != num_shards:
                raise Conflict(f"registry at {root} already has {existing.num_shards} shards")
            existing.index.create()
            return existing
        reg = cls(root, num_shards, opts)
        reg.index.create()
        return reg

    @classmethod
    def open(cls, root: str, storage_options: Mapping[str, str] | None = None) -> Registry:
        """Open an existing registry; raises RegistryNotFound if there is none."""
        opts = storage_options if storage_options is not None else _env_options(root)
        store = ArtifactStore(root, opts)
        try:
            meta = json.loads(store.read(META_FILE))
        except FileNotFoundError:
            raise RegistryNotFound(f"no tenantry registry at {root} (create one with: tenantry "
                                   f"registry init --registry {root} --shards N)") from None
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read registry metadata at {root}: {exc}") from exc
        if meta.get("format_version") != FORMAT_VERSION:
            raise RegistryError(f"unsupported registry format {meta.get('format_version')}")
        return cls(root, int(meta["num_shards"]), opts)

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "num_shards": self.num_shards,
                "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], state["num_shards"], state["storage_options"])  # type: ignore[misc]  # re-run init after unpickling

    @property
    def index(self) -> DeltaIndex:
        """The Delta index tables."""
        if self._index is None:
            self._index = DeltaIndex(self.store.uri("index"), self.storage_options)
        return self._index

    @property
    def leases(self) -> LeaseStore:
        """Leases of running runs (what ``gc`` must leave alone)."""
        return LeaseStore(self.store)

    def snapshot(self, refresh: bool = True) -> RegistrySnapshot:
        """This object's in-memory snapshot, refreshed from the log unless told not to."""
        if self._snapshot is None:
            self._snapshot = RegistrySnapshot(self.index)
            self._snapshot.refresh()
        elif refresh:
            self._snapshot.refresh()
        return self._snapshot

    def new_snapshot(self) -> RegistrySnapshot:
        """A fresh snapshot the caller owns (e.g. one per serving replica)."""
        snap = RegistrySnapshot(DeltaIndex(self.store.uri("index"), self.storage_options))
        snap.refresh()
        return snap

    def shard_of(self, tenant_id: str) -> int:
        """Shard of a (validated) tenant id in this registry."""
        return shard_of(validate_tenant_id(tenant_id), self.num_shards)

    # -- writing ------------------------------------------------------------------------
    def stage_artifact(self, tenant_id: str, model_bytes: bytes, run_id: str) -> StagedArtifact:
        """Claim the tenant's next version and write its artifact (not yet visible).

        A retry of the same run reuses that run's unpublished claim, and keeps an artifact
        already fully written by it, so a re-run never creates a second version.
        """
        shard = self.shard_of(tenant_id)
        validate_run_id(run_id)
        tdir = _tenant_dir(shard, tenant_id)
        existing = sorted((int(n[2:]) for n in self.store.list_dir(tdir)
                           if n.startswith("v=") and n[2:].isdigit()), reverse=True)
        for version in existing[:8]:
            claim = self._read_claim(f"{tdir}/v={version}")
            if claim.get("run_id") == run_id:
                return self._write_artifact(tdir, tenant_id, shard, version, model_bytes,
                                            run_id, keep_existing=True)
        version = (existing[0] if existing else 0) + 1
        if existing and not self.store.exists(f"{tdir}/v={existing[0]}/_claim.json"):
            version = existing[0]  # a directory left by a claimer killed before it claimed
        marker = json.dumps({"run_id": run_id, "claimed_at": _now().isoformat()}).encode()
        while not self.store.create_exclusive(f"{tdir}/v={version}/_claim.json", marker):
            version += 1
        return self._write_artifact(tdir, tenant_id, shard, version, model_bytes, run_id,
                                    keep_existing=False)

    def _read_claim(self, vdir: str) -> dict[str, Any]:
        try:
            return json.loads(self.store.read(f"{vdir}/_claim.json"))
        except (FileNotFoundError, ValueError):
            return {}

    def _write_artifact(self, tdir: str, tenant_id: str, shard: int, version: int,
                        data: bytes, run_id: str, keep_existing: bool) -> StagedArtifact:
        vdir = f"{tdir}/v={version}"
        if keep_existing:
            try:
                digest = self.store.read(f"{vdir}/model.ubj.sha256").decode().strip()
                size = len(self.store.read(f"{vdir}/model.ubj"))
                return StagedArtifact(tenant_id, shard, version,
                                      self.store.uri(f"{vdir}/model.ubj"), digest, size, run_id)
            except FileNotFoundError:
                pass
        digest = hashlib.sha256(data).hexdigest()
        self.store.write(f"{vdir}/model.ubj", data)
        self.store.write(f"{vdir}/model.ubj.sha256", (digest + "\n").encode())
        return StagedArtifact(tenant_id, shard, version, self.store.uri(f"{vdir}/model.ubj"),
                              digest, len(data), run_id)

    def publish_state(self, run_id: str) -> PublishState:
        """How far ``run_id`` got: none, partial (versions only) or complete."""
        if self.index.has_run("runs", run_id):
            return PublishState.COMPLETE
        if self.index.has_run("models", run_id):
            return PublishState.PARTIAL
        return PublishState.NONE

    def is_published(self, run_id: str) -> bool:
        """True when every step of publishing ``run_id`` has committed."""
        return self.publish_state(run_id) is PublishState.COMPLETE

    def publish(self, run_id: str, versions: Sequence[NewVersion],
                aliases: Sequence[AliasMove] = (),
                run_record: Mapping[str, Any] | None = None) -> PublishResult:
        """Make a run's versions visible in ONE ``models`` commit, then move its aliases.

        Each step is marked with the run id in its table, so a retried run (after a crash
        at any point) commits each step exactly once and publishes nothing twice.
        """
        validate_run_id(run_id)
        for nv in versions:
            if nv.artifact.run_id != run_id:
                raise ValidationError(f"artifact {nv.artifact.tenant_id}@v{nv.artifact.version}"
                                      f" was staged by run {nv.artifact.run_id}, not {run_id}")
        if self.is_published(run_id):
            return PublishResult(run_id, 0, True)
        published = 0
        if not self.index.has_run("models", run_id):
            rows = _model_rows(versions, run_id, [self.artifact_path(nv.artifact)
                                                  for nv in versions])
            self.index.append("models", rows, run_id)
            published = rows.num_rows
        profiled = [(nv.artifact, nv.profile) for nv in versions if nv.profile is not None]
        if profiled:  # before the aliases move: a production version has its profile
            if not self.index.exists("profiles"):
                self.index.ensure("profiles")
            if not self.index.has_run("profiles", run_id):
                self.index.append("profiles", profile_rows(profiled, run_id, _now()), run_id)
        moves = 0
        if not self.index.has_run("aliases", run_id):
            if aliases:
                self.index.append_sequenced("aliases", _alias_rows(self, aliases, run_id),
                                            run_id)
            moves = len(aliases)
        record = dict(run_record or {})
        data_date = record.get("date") or next((v.data_date for v in versions if v.data_date),
                                               None)
        self.index.append("runs", pa.table({
            "run_id": [run_id], "data_date": [data_date], "published": [len(versions)],
            "alias_moves": [len(aliases)], "record_json": [json.dumps(record, default=str)],
            "created_at": [_now()],
        }), run_id)
        return PublishResult(run_id, published, published == 0 and len(versions) > 0, moves)

    def move_aliases(self, moves: Sequence[AliasMove], actor: str | None = None) -> None:
        """Apply alias moves (promote/clear) in one ``aliases`` commit, recording ``actor``."""
        if moves:
            self.index.append_sequenced("aliases", _alias_rows(self, moves, None, actor=actor))

    def promote(self, tenant_id: str, version: int, alias: str = "production",
                reason: str | None = "promote", actor: str | None = None) -> ModelVersion:
        """Point ``alias`` of a tenant at an existing version; returns that version.

        Promoting the tenant's shadow version to production also clears ``shadow`` (in
        the same commit): it has nothing left to be compared against.

        Args:
            tenant_id: the tenant.
            version: an existing version of it.
            alias: ``production`` or ``shadow``.
            reason: why, recorded in the alias log (None or empty: ``"promote"``).
            actor: who, recorded in the alias log (OS user, ``"admin"``).
        """
        alias = Alias.parse(alias).value
        snap = self.snapshot()
        mv = snap.version(validate_tenant_id(tenant_id), int(version))
        moves = [AliasMove(tenant_id, alias, mv.version, reason or "promote")]
        if alias == Alias.PRODUCTION.value and \
                snap.alias_version(tenant_id, Alias.SHADOW) == mv.version:
            moves.append(AliasMove(tenant_id, Alias.SHADOW.value, None,
                                   f"v{mv.version} promoted to production"))
        self.move_aliases(moves, actor)
        self.snapshot()
        return mv

    def clear_alias(self, tenant_id: str, alias: str, actor: str | None = None,
                    reason: str | None = None) -> None:
        """Remove ``alias`` from a tenant (``actor`` and ``reason`` go to the alias log)."""
        alias = Alias.parse(alias).value
        self.snapshot().versions(validate_tenant_id(tenant_id))
        self.move_aliases([AliasMove(tenant_id, alias, None, reason or "clear")], actor)

    def rollback(self, tenant_id: str, actor: str | None = None,
                 reason: str | None = None) -> ModelVersion:
        """Move ``production`` back to the previous production version.

        Args:
            tenant_id: the tenant.
            actor: who, recorded in the alias log.
            reason: why, recorded in the alias log (None or empty: ``"rollback"``).

        Raises:
            Conflict: the tenant has no earlier production version.
        """
        snap = self.snapshot()
        stack = snap.alias_stack(validate_tenant_id(tenant_id), Alias.PRODUCTION)
        snap.versions(tenant_id)
        if stack.previous is None:
            raise Conflict(f"tenant {tenant_id!r} has no previous production version")
        target = snap.version(tenant_id, stack.previous)
        if not self.store.exists(self.artifact_path(target)):
            raise Conflict(f"cannot roll {tenant_id!r} back to v{target.version}: its artifact "
                           "was removed by gc")
        rows = _alias_rows(self, [AliasMove(tenant_id, "production", target.version,
                                            reason or "rollback")], None, action="rollback",
                           actor=actor)
        self.index.append_sequenced("aliases", rows)
        self.snapshot()
        return target

    # -- reading ------------------------------------------------------------------------
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


def _env_options(root: str) -> dict[str, str]:
    return RegistrySettings.from_env().storage_options(root)


def _model_rows(versions: Sequence[NewVersion], run_id: str, paths: Sequence[str]) -> pa.Table:
    """Index rows of a run's versions; ``paths`` are the artifacts relative to the root."""
    now = _now()

    def metric(nv: NewVersion, key: str) -> float | None:
        value = nv.metrics.get(key)
        return None if value is None else float(value)

    return pa.table({
        "tenant_id": [v.artifact.tenant_id for v in versions],
        "shard": pa.array([v.artifact.shard for v in versions], pa.int32()),
        "version": [v.artifact.version for v in versions],
        "artifact_uri": list(paths),
        "sha256": [v.artifact.sha256 for v in versions],
        "size_bytes": [v.artifact.size_bytes for v in versions],
        "feature_names": [list(v.feature_names) for v in versions],
        "auc": [metric(v, "auc") for v in versions],
        "logloss": [metric(v, "logloss") for v in versions],
        "n_train": pa.array([metric(v, "n_train") for v in versions], pa.float64())
                     .cast(pa.int64()),
        "n_holdout": pa.array([metric(v, "n_holdout") for v in versions], pa.float64())
                       .cast(pa.int64()),
        "base_rate": [metric(v, "base_rate") for v in versions],
        "metrics_json": [json.dumps({k: float(x) for k, x in v.metrics.items()})
                         for v in versions],
        "params_json": [json.dumps(dict(v.params), default=str) for v in versions],
        "data_date": [v.data_date for v in versions],
        "run_id": [run_id] * len(versions),
        "created_at": pa.array([now] * len(versions), pa.timestamp("us", tz="UTC")),
        "objective": [v.objective for v in versions],
        "num_class": pa.array([v.num_class for v in versions], pa.int64()),
        "feature_types": [list(v.feature_types) or ["float"] * len(v.feature_names)
                          for v in versions],
        "forest_check": pa.array([v.forest_check for v in versions], pa.string()),
    }, schema=None)


def _alias_rows(reg: Registry, moves: Sequence[AliasMove], run_id: str | None,
                action: str | None = None, actor: str | None = None) -> RowsAt:
    """Alias events for one commit, built once the commit's table version is known.

    Events are ordered by that version, so one commit holds at most one event per
    (tenant, alias): the last move given for it.
    """
    last: dict[tuple[str, str], AliasMove] = {}
    for m in moves:
        last[(validate_tenant_id(m.tenant_id), Alias.parse(m.alias).value)] = m
    moves = list(last.values())

    def rows_at(commit_version: int) -> pa.Table:
        now = _now()  # the writer's clock: informative only, never used to order events
        return pa.table({
            "tenant_id": [m.tenant_id for m in moves],
            "shard": pa.array([reg.shard_of(m.tenant_id) for m in moves], pa.int32()),
            "alias": [m.alias for m in moves],
            "version": pa.array([m.version for m in moves], pa.int64()),
            "action": [action or ("clear" if m.version is None else "set") for m in moves],
            "reason": [m.reason for m in moves],
            "run_id": [run_id] * len(moves),
            "set_at": pa.array([now] * len(moves), pa.timestamp("us", tz="UTC")),
            "commit_version": pa.array([commit_version] * len(moves), pa.int64()),
            "actor": pa.array([actor] * len(moves), pa.string()),
        })

    return rows_at


