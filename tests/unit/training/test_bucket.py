"""One training bucket, run in-process (no Ray): isolation of every degenerate tenant type."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import training.bucket as bucket_mod
from registry import Registry, shard_of
from training.bucket import BucketSpec, JobContext, Status, train_bucket
from training.craft import rule_rows
from training.model import ModelSpec
from training.table import write_rows

DAYS = ("2024-01-01", "2024-01-02", "2024-01-03")
SHARDS = 2


def _tenants_in_shard(shard: int, n: int) -> list[str]:
    out, i = [], 0
    while len(out) < n:
        if shard_of(f"co-{i}", SHARDS) == shard:
            out.append(f"co-{i}")
        i += 1
    return out


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[JobContext, dict[str, str]]:
    good, good2, tiny, one, nohold, boom = _tenants_in_shard(0, 6)
    rows = []
    for k, day in enumerate(DAYS):
        rows.append(rule_rows(good, day, 80, seed=k, num_shards=SHARDS, noise=0.1))
        rows.append(rule_rows(good2, day, 60, seed=10 + k, num_shards=SHARDS, feature=4))
        rows.append(rule_rows(boom, day, 60, seed=20 + k, num_shards=SHARDS))
        rows.append(rule_rows(tiny, day, 5, seed=30 + k, num_shards=SHARDS))
        rows.append(rule_rows(one, day, 60, seed=40 + k, num_shards=SHARDS, constant_label=0))
        if day != DAYS[-1]:
            rows.append(rule_rows(nohold, day, 60, seed=50 + k, num_shards=SHARDS))
    data = str(tmp_path / "features")
    write_rows(data, pa.concat_tables(rows), num_shards=SHARDS)
    reg = Registry.create(str(tmp_path / "registry"), num_shards=SHARDS)
    ctx = JobContext(data, reg, "run-1", DAYS[-1], DAYS, SHARDS,
                     ModelSpec(n_estimators=5, max_depth=3))
    names = {"good": good, "good2": good2, "tiny": tiny, "one": one, "nohold": nohold,
             "boom": boom}
    return ctx, names


def test_each_degenerate_tenant_is_isolated_with_its_reason(
        setup: tuple[JobContext, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, t = setup
    real = bucket_mod.train_tenant

    def flaky(tenant_id: str, *args: object, **kwargs: object) -> object:
        if tenant_id == t["boom"]:
            raise RuntimeError("simulated xgboost crash")
        return real(tenant_id, *args, **kwargs)  # type: ignore[arg-type]  # passthrough

    monkeypatch.setattr(bucket_mod, "train_tenant", flaky)
    result = train_bucket(ctx, BucketSpec(shard=0))
    by_tenant = {o.tenant_id: o for o in result.outcomes}
    assert set(by_tenant) == set(t.values())
    assert by_tenant[t["good"]].status is Status.TRAINED
    # each tenant trained on exactly its own rows: 2 training days + the holdout day
    assert dict(by_tenant[t["good"]].metrics)["n_train"] == 160
    assert dict(by_tenant[t["good"]].metrics)["n_holdout"] == 80
    assert dict(by_tenant[t["good2"]].metrics)["n_holdout"] == 60
    assert by_tenant[t["good2"]].status is Status.TRAINED
    assert (by_tenant[t["tiny"]].status, by_tenant[t["tiny"]].reason) == \
        (Status.SKIPPED, "too_few_rows")
    assert (by_tenant[t["one"]].status, by_tenant[t["one"]].reason) == \
        (Status.SKIPPED, "one_class")
    assert (by_tenant[t["nohold"]].status, by_tenant[t["nohold"]].reason) == \
        (Status.SKIPPED, "holdout_unusable")
    boom = by_tenant[t["boom"]]
    assert (boom.status, boom.reason) == (Status.FAILED, "error")
    assert "simulated xgboost crash" in boom.detail
    # only trained tenants staged an artifact, each one version
    staged = {o.tenant_id: o.artifact for o in result.outcomes if o.artifact is not None}
    assert set(staged) == {t["good"], t["good2"]}
    assert all(a.version == 1 and a.run_id == "run-1" for a in staged.values())


def test_bucket_trains_only_its_part_and_retry_reuses_claims(
        setup: tuple[JobContext, dict[str, str]]) -> None:
    ctx, t = setup
    parts = [train_bucket(ctx, BucketSpec(shard=0, part=p, parts=2)) for p in (0, 1)]
    seen = [o.tenant_id for r in parts for o in r.outcomes]
    assert sorted(seen) == sorted(t.values())  # each tenant in exactly one part
    again = train_bucket(ctx, BucketSpec(shard=0))
    first = {o.tenant_id: o.artifact for r in parts for o in r.outcomes if o.artifact}
    second = {o.tenant_id: o.artifact for o in again.outcomes if o.artifact}
    assert first == second  # same run id: same versions, same bytes (deterministic)


def test_production_is_scored_on_the_same_holdout(
        setup: tuple[JobContext, dict[str, str]]) -> None:
    ctx, _ = setup
    from registry import AliasMove, NewVersion

    first = train_bucket(ctx, BucketSpec(shard=0))
    trained = [o for o in first.outcomes if o.status is Status.TRAINED]
    ctx.registry.publish("run-1", [NewVersion(o.artifact, bucket_mod.FEATURE_NAMES,
                                              dict(o.metrics)) for o in trained],
                         [AliasMove(o.tenant_id, "production", o.artifact.version)
                          for o in trained])
    prod = tuple(ctx.registry.production_versions().values())
    ctx2 = JobContext(ctx.data_path, ctx.registry, "run-2", ctx.date, ctx.dates,
                      ctx.num_shards, ctx.spec)
    second = train_bucket(ctx2, BucketSpec(shard=0, production=prod))
    for o in second.outcomes:
        if o.status is Status.TRAINED:
            assert o.production_version == 1 and o.artifact.version == 2
            # same data, same seed: production scores exactly what the new model scores
            assert o.production_score is not None
            assert np.isclose(o.production_score.auc, o.holdout.auc)
