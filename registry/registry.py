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

The class is assembled from :class:`registry.writing.RegistryWriting` (staging, publishing,
alias moves) and :class:`registry.reading.RegistryReading` (lookups, artifact reads).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from registry.errors import Conflict, RegistryError, RegistryNotFound, ValidationError
from registry.ids import shard_of, validate_tenant_id
from registry.index import DeltaIndex
from registry.index_rows import model_rows as _model_rows  # noqa: F401 - tests import it here
from registry.index_rows import now
from registry.leases import LeaseStore
from registry.reading import AliasEvent, RegistryReading, booster_from_bytes
from registry.snapshot import RegistrySnapshot
from registry.storage import ArtifactStore
from registry.writing import RegistryWriting, validate_run_id

__all__ = ["FORMAT_VERSION", "AliasEvent", "Registry", "booster_from_bytes", "validate_run_id"]

FORMAT_VERSION = 1
META_FILE = "_tenantry.json"


class Registry(RegistryWriting, RegistryReading):
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
        """Create a registry (or open it if it exists with the same shard count);
        ``storage_options`` as for :meth:`open`.

        Raises:
            Conflict: a registry exists at ``root`` with a different shard count.
        """
        if num_shards < 1 or num_shards > 4096:
            raise ValidationError("num_shards must be between 1 and 4096")
        opts = dict(storage_options or {})
        store = ArtifactStore(root, opts)
        meta = {"format_version": FORMAT_VERSION, "num_shards": num_shards,
                "created_at": now().isoformat()}
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
        """Open an existing registry; raises RegistryNotFound if there is none.

        ``storage_options`` reach an object store (``RegistrySettings.storage_options``
        maps the ``AWS_*`` variables the caller read); a local root needs none.
        """
        opts = dict(storage_options or {})
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
