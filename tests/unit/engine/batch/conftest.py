"""Helpers for the batch-scoring unit tests: tiny models, a registry, a feature table, and
buckets run in this process instead of on Ray Data."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from engine.batch.plan import ScoreBucket
from engine.batch.task import BucketResult, ScoreContext, score_bucket
from registry import Registry, shard_of
from tests.conftest import publish_models, train_tiny

FEATURES = ("amount", "age_days", "velocity", "risk")
DATES = ("2024-03-01", "2024-03-02")
SHARDS = 4


def train_bytes(seed: int, features: Sequence[str] = FEATURES, rounds: int = 12,
                depth: int = 4) -> bytes:
    """A small binary classifier on ``features`` (with missing values), as UBJSON."""
    return train_tiny(seed, features=features, rows=400, rounds=rounds, depth=depth,
                      missing=0.1)


def publish(reg: Registry, models: dict[str, bytes], run_id: str, alias: str = "production",
            features: Sequence[str] = FEATURES) -> dict[str, int]:
    """Stage and publish one version per tenant under ``alias``; tenant -> version."""
    return publish_models(reg, models, run_id, features=features, alias=alias,
                          metrics={"auc": 0.9})


def feature_rows(tenants: Sequence[str], seed: int = 0, dates: Sequence[str] = DATES,
                 row_id: bool = False, columns: Sequence[str] = FEATURES) -> pa.Table:
    """Rows for every tenant on every date (5-40 each), NaNs included, in a stable order."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[Any]] = {"tenant_id": [], "date": [], "shard": []}
    out.update({c: [] for c in columns})
    for day in dates:
        for t in tenants:
            n = int(rng.integers(5, 40))
            out["tenant_id"] += [t] * n
            out["date"] += [day] * n
            out["shard"] += [shard_of(t, SHARDS)] * n
            x = rng.normal(size=(n, len(columns))) * 2
            x[rng.random(x.shape) < 0.1] = np.nan
            for j, c in enumerate(columns):
                out[c] += x[:, j].tolist()
    table = pa.table({**out, "shard": pa.array(out["shard"], pa.int32())})
    if row_id:
        ids = [f"evt-{i:06d}" for i in range(table.num_rows)]
        table = table.append_column("row_id", pa.array(ids))
    return table


def write_features(path: str, table: pa.Table) -> str:
    """Append ``table`` to a feature table partitioned by shard and date (one commit)."""
    write_deltalake(path, table, partition_by=["shard", "date"], mode="append")
    return path


def run_here(ctx: ScoreContext, buckets: list[ScoreBucket],
             resources: dict[str, float]) -> Iterator[BucketResult]:
    """The job's runner, in this process (no Ray)."""
    for bucket in buckets:
        yield score_bucket(ctx, bucket)


@pytest.fixture()
def world(tmp_path: Path) -> dict[str, Any]:
    """A registry with tenants a0..a5 at v1 (production), and features for a0..a7."""
    reg = Registry.create(str(tmp_path / "registry"), num_shards=SHARDS)
    tenants = [f"a{i}" for i in range(8)]
    models = {t: train_bytes(i) for i, t in enumerate(tenants[:6])}
    publish(reg, models, "seed")
    data = write_features(str(tmp_path / "features"), feature_rows(tenants))
    return {"reg": reg, "data": data, "out": str(tmp_path / "scores"), "models": models,
            "tenants": tenants, "tmp": tmp_path}
