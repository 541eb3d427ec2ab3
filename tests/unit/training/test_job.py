"""The training job end to end without Ray: buckets run in-process in place of Ray Data.

Covers what the driver does around the buckets: it refuses a registry that does not exist
and a feature table laid out for another shard count (before staging anything), and it
holds a renewed lease that gc honours while the run lasts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import write_deltalake

import training.job as job_mod
from engine.cli import main
from registry import Registry
from registry.errors import RegistryNotFound
from registry.gc import collect_garbage
from tests.conftest import wait_for
from training.bucket import BucketResult, BucketSpec, JobContext, train_bucket
from training.craft import rule_rows
from training.errors import InvalidTrainingInput
from training.features import PARTITION_COLUMNS, table_schema
from training.generate import GeneratorConfig, generate
from training.settings import TrainingSettings

SETTINGS = TrainingSettings(n_estimators=4, max_depth=3, window_days=3, progress=False)


@pytest.fixture()
def no_ray(monkeypatch: pytest.MonkeyPatch) -> list[BucketSpec]:
    """Run buckets in this process; returns the list of buckets that ran."""
    ran: list[BucketSpec] = []

    def run_here(ctx: JobContext, buckets: list[BucketSpec],
                 resources: dict[str, float]) -> Iterator[BucketResult]:
        for bucket in buckets:
            ran.append(bucket)
            yield train_bucket(ctx, bucket)

    monkeypatch.setattr(job_mod, "ensure_ray", lambda *args, **kwargs: None)
    monkeypatch.setattr(job_mod, "_run_buckets", run_here)
    return ran


def _data(tmp_path: Path, shards: int, name: str = "features") -> str:
    path = str(tmp_path / name)
    generate(path, GeneratorConfig(tenants=6, days=3, seed=3, num_shards=shards,
                                   mean_rows=300, size_sigma=0.2))
    return path


def _nothing_staged(root: str) -> bool:
    return not list(Path(root).rglob("_claim.json"))


def test_a_table_laid_out_for_another_shard_count_is_refused(tmp_path: Path,
                                                             no_ray: list[BucketSpec]) -> None:
    data = _data(tmp_path, shards=8)
    reg = Registry.create(str(tmp_path / "registry"), num_shards=4)
    with pytest.raises(InvalidTrainingInput, match="8 shards but the registry has 4"):
        job_mod.run_training(data, reg.root, run_id="r1", settings=SETTINGS)
    assert no_ray == [] and _nothing_staged(reg.root)
    assert not reg.is_published("r1") and reg.leases.live() == {}


def test_an_undeclared_table_with_a_shard_beyond_the_registry_is_refused(
        tmp_path: Path, no_ray: list[BucketSpec]) -> None:
    data = str(tmp_path / "features")
    rows = pa.concat_tables([rule_rows(f"co-{i}", day, 40, seed=i, num_shards=8)
                             for i in range(12) for day in ("2024-01-01", "2024-01-02")])
    write_deltalake(data, rows.select(table_schema().names).cast(table_schema()),
                    partition_by=list(PARTITION_COLUMNS))  # no declared shard count
    assert max(rows.column("shard").to_pylist()) >= 4
    reg = Registry.create(str(tmp_path / "registry"), num_shards=4)
    with pytest.raises(InvalidTrainingInput, match="registry has only 4 shards"):
        job_mod.run_training(data, reg.root, run_id="r1", settings=SETTINGS)
    assert no_ray == [] and _nothing_staged(reg.root) and not reg.is_published("r1")


def test_training_never_creates_a_registry(tmp_path: Path, no_ray: list[BucketSpec],
                                           capsys: Any) -> None:
    data = _data(tmp_path, shards=2)
    missing = tmp_path / "not-a-registry"
    with pytest.raises(RegistryNotFound, match="registry init"):
        job_mod.run_training(data, str(missing), settings=SETTINGS)
    assert main(["train", "--data", data, "--registry", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tenantry: error: no tenantry registry at") and err.count("\n") == 1
    assert "Traceback" not in err
    assert not missing.exists() and no_ray == []


def test_the_run_holds_a_renewed_lease_that_gc_honours(tmp_path: Path, no_ray: list[BucketSpec],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    data = _data(tmp_path, shards=2)
    reg = Registry.create(str(tmp_path / "registry"), num_shards=2)
    monkeypatch.setattr(job_mod, "LEASE_RENEW_S", 0.05)
    seen: dict[str, Any] = {}
    real = job_mod._run_buckets

    def run_then_collect(ctx: JobContext, buckets: list[BucketSpec],
                         resources: dict[str, float]) -> Iterator[BucketResult]:
        first = reg.leases.live()[ctx.run_id].expires_at
        wait_for(lambda: reg.leases.live()[ctx.run_id].expires_at > first, timeout=10,
                 what=lambda: "(the driver never renewed its lease)")
        for result in real(ctx, buckets, resources):
            # Another operator runs gc with no grace while the run is midway.
            seen["gc"] = collect_garbage(reg, keep=1, orphan_grace_s=0)
            yield result

    monkeypatch.setattr(job_mod, "_run_buckets", run_then_collect)
    report = job_mod.run_training(data, reg.root, run_id="nightly-1", settings=SETTINGS)
    assert seen["gc"].orphans_removed == 0
    assert report.trained > 0 and report.published == report.trained
    for tenant, mv in Registry.open(reg.root).production_versions().items():
        assert Registry.open(reg.root).read_artifact(mv), tenant
    assert reg.leases.live() == {} and not list(Path(reg.root, "leases").glob("*.json"))
