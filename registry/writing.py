"""Writing to the registry: claiming versions, staging artifacts, publishing runs, moving
aliases. :class:`RegistryWriting` is a part of :class:`registry.registry.Registry`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from registry import index_rows
from registry.errors import Conflict, ValidationError
from registry.ids import validate_companion_name, validate_tenant_id
from registry.index import DeltaIndex, profile_rows
from registry.types import (
    Alias,
    AliasMove,
    ModelVersion,
    NewVersion,
    PublishResult,
    PublishState,
    StagedArtifact,
)

if TYPE_CHECKING:
    from registry.snapshot import RegistrySnapshot
    from registry.storage import ArtifactStore

__all__ = ["RegistryWriting", "validate_run_id"]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def validate_run_id(run_id: str) -> str:
    """Return ``run_id`` if valid; raise ValidationError otherwise."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ValidationError(f"invalid run id {run_id!r}: 1-128 of letters, digits, '._:-'")
    return run_id



def _tenant_dir(shard: int, tenant_id: str) -> str:
    return f"artifacts/shard={shard:02d}/tenant={tenant_id}"



class RegistryWriting:
    """Staging, publishing and alias moves (a part of ``Registry``)."""

    if TYPE_CHECKING:  # provided by Registry and RegistryReading
        store: ArtifactStore

        @property
        def index(self) -> DeltaIndex: ...

        def snapshot(self, refresh: bool = True) -> RegistrySnapshot: ...

        def shard_of(self, tenant_id: str) -> int: ...

        def artifact_path(self, mv: ModelVersion | StagedArtifact) -> str: ...

    def stage_artifact(self, tenant_id: str, model_bytes: bytes, run_id: str,
                       files: Mapping[str, bytes] | None = None) -> StagedArtifact:
        """Claim the tenant's next version and write its artifact (not yet visible).

        A retry of the same run reuses that run's unpublished claim, and keeps an artifact
        already fully written by it, so a re-run never creates a second version.

        ``files`` are derived from the artifact (e.g. its compiled form) and written beside
        it, before the checksum file that marks the version's directory complete; their
        names must pass :func:`~registry.ids.validate_companion_name` (``*.arrow``). Readers verify
        them on their own: the index records only the artifact's checksum.
        """
        shard = self.shard_of(tenant_id)
        validate_run_id(run_id)
        for name in files or {}:
            validate_companion_name(name)
        tdir = _tenant_dir(shard, tenant_id)
        existing = sorted((int(n[2:]) for n in self.store.list_dir(tdir)
                           if n.startswith("v=") and n[2:].isdigit()), reverse=True)
        for version in existing[:8]:
            claim = self._read_claim(f"{tdir}/v={version}")
            if claim.get("run_id") == run_id:
                return self._write_artifact(tdir, tenant_id, shard, version, model_bytes,
                                            run_id, files or {}, keep_existing=True)
        version = (existing[0] if existing else 0) + 1
        if existing and not self.store.exists(f"{tdir}/v={existing[0]}/_claim.json"):
            version = existing[0]  # a directory left by a claimer killed before it claimed
        marker = json.dumps({"run_id": run_id, "claimed_at": index_rows.now().isoformat()}).encode()
        while not self.store.create_exclusive(f"{tdir}/v={version}/_claim.json", marker):
            version += 1
        return self._write_artifact(tdir, tenant_id, shard, version, model_bytes, run_id,
                                    files or {}, keep_existing=False)

    def _read_claim(self, vdir: str) -> dict[str, Any]:
        try:
            return json.loads(self.store.read(f"{vdir}/_claim.json"))
        except (FileNotFoundError, ValueError):
            return {}

    def _write_artifact(self, tdir: str, tenant_id: str, shard: int, version: int,
                        data: bytes, run_id: str, files: Mapping[str, bytes],
                        keep_existing: bool) -> StagedArtifact:
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
        for name, blob in sorted(files.items()):
            self.store.write(f"{vdir}/{name}", blob)
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
            rows = index_rows.model_rows(versions, run_id, [self.artifact_path(nv.artifact)
                                                  for nv in versions])
            self.index.append("models", rows, run_id)
            published = rows.num_rows
        profiled = [(nv.artifact, nv.profile) for nv in versions if nv.profile is not None]
        if profiled:  # before the aliases move: a production version has its profile
            if not self.index.exists("profiles"):
                self.index.ensure("profiles")
            if not self.index.has_run("profiles", run_id):
                self.index.append("profiles", profile_rows(profiled, run_id, index_rows.now()), run_id)
        moves = 0
        if not self.index.has_run("aliases", run_id):
            if aliases:
                self.index.append_sequenced("aliases", index_rows.alias_rows(self.shard_of, aliases, run_id),
                                            run_id)
            moves = len(aliases)
        record = dict(run_record or {})
        data_date = record.get("date") or next((v.data_date for v in versions if v.data_date),
                                               None)
        self.index.append("runs", pa.table({
            "run_id": [run_id], "data_date": [data_date], "published": [len(versions)],
            "alias_moves": [len(aliases)], "record_json": [json.dumps(record, default=str)],
            "created_at": [index_rows.now()],
        }), run_id)
        return PublishResult(run_id, published, published == 0 and len(versions) > 0, moves)

    def move_aliases(self, moves: Sequence[AliasMove], actor: str | None = None) -> None:
        """Apply alias moves (promote/clear) in one ``aliases`` commit, recording ``actor``."""
        if moves:
            self.index.append_sequenced("aliases", index_rows.alias_rows(self.shard_of, moves, None, actor=actor))

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
        rows = index_rows.alias_rows(self.shard_of, [AliasMove(tenant_id, "production", target.version,
                                            reason or "rollback")], None, action="rollback",
                           actor=actor)
        self.index.append_sequenced("aliases", rows)
        self.snapshot()
        return target
