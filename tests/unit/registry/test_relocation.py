"""A registry copied or moved on disk reads only its own artifacts, checked by sha256."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from engine.cli import main
from registry import AliasMove, ChecksumMismatch, Registry
from registry.errors import ArtifactOutsideRoot
from registry.index import TABLES

from .conftest import new_version


def _publish(reg: Registry, tenant: str, data: bytes, run_id: str) -> int:
    staged = reg.stage_artifact(tenant, data, run_id)
    reg.publish(run_id, [new_version(staged)], [AliasMove(tenant, "production", staged.version)])
    return staged.version


def _flip_byte(path: str) -> None:
    raw = bytearray(Path(path).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(raw))


def test_index_rows_hold_paths_relative_to_the_root(reg: Registry, model_bytes: bytes) -> None:
    _publish(reg, "acme", model_bytes, "r1")
    rows = reg.index.query("models").to_pylist()
    assert rows[0]["artifact_uri"] == f"artifacts/shard={reg.shard_of('acme'):02d}" \
        "/tenant=acme/v=1/model.ubj"
    mv = reg.get("acme").production
    assert mv is not None and Path(mv.artifact_uri).is_absolute()
    assert mv.artifact_uri.startswith(str(Path(reg.root).resolve()))


def test_a_copy_reads_its_own_bytes(tmp_path: Path, reg: Registry, model_bytes: bytes) -> None:
    _publish(reg, "acme", model_bytes, "r1")
    copy_root = str(tmp_path / "copy")
    shutil.copytree(reg.root, copy_root)
    copy = Registry.open(copy_root)
    copied = copy.get("acme").production
    assert copied is not None and copied.artifact_uri.startswith(copy_root)
    _flip_byte(copied.artifact_uri)
    with pytest.raises(ChecksumMismatch):
        copy.read_artifact(copied)
    original = Registry.open(reg.root)
    mv = original.get("acme").production
    assert mv is not None and original.read_artifact(mv) == model_bytes


def test_a_moved_registry_still_loads(tmp_path: Path, reg: Registry, model_bytes: bytes,
                                      capsys: Any) -> None:
    _publish(reg, "acme", model_bytes, "r1")
    moved = str(tmp_path / "elsewhere" / "registry")
    shutil.move(reg.root, moved)
    again = Registry.open(moved)
    mv = again.get("acme").production
    assert mv is not None
    assert again.read_artifact(mv) == model_bytes
    assert again.load_booster(mv).num_features() == 3
    assert main(["registry", "show", "acme", "--registry", moved, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["production"]["artifact_uri"] == f"{moved}/artifacts/shard=" \
        f"{again.shard_of('acme'):02d}/tenant=acme/v=1/model.ubj"


def _legacy_row(reg: Registry, tenant: str, version: int, uri: str, sha: str) -> None:
    """An index row as registries wrote them before paths were relative (absolute URI)."""
    row: dict[str, Any] = {f.name: None for f in TABLES["models"]}
    row.update(tenant_id=tenant, shard=reg.shard_of(tenant), version=version, artifact_uri=uri,
               sha256=sha, size_bytes=1, feature_names=["amount"], run_id="legacy",
               metrics_json="{}", created_at=reg.index.query("models")
               .column("created_at")[0].as_py())
    reg.index.append("models", pa.Table.from_pylist([row], TABLES["models"]))


def test_absolute_rows_are_read_only_inside_the_root(tmp_path: Path, reg: Registry,
                                                     model_bytes: bytes) -> None:
    _publish(reg, "acme", model_bytes, "r1")
    inside = reg.get("acme").production
    assert inside is not None
    _legacy_row(reg, "acme", 2, inside.artifact_uri, inside.sha256)  # absolute, inside
    other = tmp_path / "other-registry" / "model.ubj"
    other.parent.mkdir()
    other.write_bytes(model_bytes)
    _legacy_row(reg, "acme", 3, str(other), inside.sha256)  # absolute, outside
    _legacy_row(reg, "acme", 4, "artifacts/../../other-registry/model.ubj", inside.sha256)
    snap = reg.snapshot()
    assert reg.read_artifact(snap.version("acme", 2)) == model_bytes
    for version in (3, 4):
        with pytest.raises(ArtifactOutsideRoot, match="outside this registry"):
            reg.read_artifact(snap.version("acme", version))
