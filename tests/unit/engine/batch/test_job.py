"""The scoring job end to end without Ray (buckets run in this process): parity with
XGBoost and with serving's predict, per-tenant failures, one commit per run id, resume."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import xgboost as xgb
from deltalake import DeltaTable

from engine.batch import ScoreSettings, run_scoring
from engine.batch.output import STAGING_DIR
from engine.batch.plan import ScoreBucket
from engine.batch.task import BucketResult, ScoreContext, score_bucket
from engine.serving.model import load_model
from registry import AliasMove, NewVersion, Registry
from registry.errors import Conflict
from training.errors import DataNotFound

from .conftest import DATES, FEATURES, feature_rows, publish, run_here, train_bytes, write_features

QUIET = ScoreSettings(progress=False)


def _score(world: dict[str, Any], **kw: Any) -> Any:
    return run_scoring(world["data"], world["reg"], world["out"], settings=QUIET,
                       runner=run_here, **kw)


def _output(path: str) -> pa.Table:
    return DeltaTable(path).to_pyarrow_table().sort_by([("tenant_id", "ascending"),
                                                        ("row_index", "ascending")])


def _day(world: dict[str, Any], tenant: str, date: str = DATES[-1]) -> np.ndarray:
    rows = DeltaTable(world["data"]).to_pyarrow_table().to_pylist()
    return np.array([[np.nan if r[f] is None else r[f] for f in FEATURES]
                     for r in rows if r["tenant_id"] == tenant and r["date"] == date])


def test_scores_equal_xgboost_and_serving(world: dict[str, Any]) -> None:
    report = _score(world)
    assert (report.date, report.run_id, report.tenants) == (DATES[-1], f"score-{DATES[-1]}", 6)
    out = _output(world["out"])
    assert set(out.column("date").to_pylist()) == {DATES[-1]}
    assert out.num_rows == report.rows
    reg: Registry = world["reg"]
    for tenant in world["tenants"][:6]:
        mine = out.filter(pa.compute.equal(out.column("tenant_id"), tenant))
        x = _day(world, tenant)
        assert mine.column("row_index").to_pylist() == list(range(len(x)))  # ordinal order
        booster = xgb.Booster(model_file=bytearray(world["models"][tenant]))
        want = booster.inplace_predict(x.astype(np.float32))
        production = reg.get(tenant).production
        assert production is not None
        served = load_model(reg, production).predict(x.astype(np.float32))
        got = np.array(mine.column("score").to_pylist())
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
        np.testing.assert_allclose(got, served, atol=1e-6, rtol=0)
        assert set(mine.column("version").to_pylist()) == {1}
        assert set(mine.column("shard").to_pylist()) == {reg.shard_of(tenant)}
        assert set(mine.column("run_id").to_pylist()) == {report.run_id}
        assert mine.column("shadow_score").null_count == mine.num_rows


def test_rerun_of_a_run_id_commits_nothing(world: dict[str, Any]) -> None:
    first = _score(world)
    before = DeltaTable(world["out"])
    again = _score(world)
    assert again.already_published and not first.already_published
    assert (again.rows, again.tenants, again.table_version) == \
        (first.rows, first.tenants, first.table_version)
    assert [f.tenant_id for f in again.failed] == [f.tenant_id for f in first.failed]
    after = DeltaTable(world["out"])
    assert after.version() == before.version()
    assert after.to_pyarrow_table().num_rows == first.rows
    assert not list(Path(world["out"], STAGING_DIR).glob("*/*"))  # staging cleaned up
    other = _score(world, run_id="second-look")  # another id: a second commit
    assert other.table_version == before.version() + 1
    assert DeltaTable(world["out"]).to_pyarrow_table().num_rows == 2 * first.rows


def test_each_failure_is_isolated_with_its_reason(world: dict[str, Any]) -> None:
    reg: Registry = world["reg"]
    # a1: artifact bytes changed after publishing -> sha256 mismatch
    a1 = reg.get("a1").production
    assert a1 is not None
    artifact = Path(reg.root) / reg.artifact_path(a1)
    artifact.write_bytes(artifact.read_bytes()[:-8] + b"garbage!")
    # a6: a model on a feature the data does not have
    publish(reg, {"a6": train_bytes(6, ("amount", "not_in_data"))}, "odd",
            features=("amount", "not_in_data"))
    # a7: index lists 3 features for a 4-feature model
    staged = reg.stage_artifact("a7", train_bytes(7), "narrow")
    reg.publish("narrow", [NewVersion(staged, FEATURES[:3], {"auc": 0.9})],
                [AliasMove("a7", "production", staged.version)])
    report = _score(world)
    reasons = {f.tenant_id: f.reason for f in report.failed}
    assert reasons == {"a1": "corrupt_artifact", "a6": "feature_mismatch", "a7": "load_failed"}
    details = {f.tenant_id: f.detail for f in report.failed}
    assert "sha256" in details["a1"] and "not_in_data" in details["a6"]
    assert "feature" in details["a7"]  # the serving loader says how they disagree
    assert report.tenants == 5
    scored = set(_output(world["out"]).column("tenant_id").to_pylist())
    assert scored == {"a0", "a2", "a3", "a4", "a5"}
    doc = report.to_json()
    assert {"run_id", "rows", "tenants", "failed", "rows_per_s", "output"} <= set(doc)
    assert {"tenant_id": "a1", "reason": "corrupt_artifact"}.items() <= doc["failed"][0].items()


def test_tenant_without_a_model_fails_alone(world: dict[str, Any]) -> None:
    report = _score(world)
    assert [(f.tenant_id, f.reason) for f in report.failed] == \
        [("a6", "no_model"), ("a7", "no_model")]
    assert all(f.rows > 0 for f in report.failed)
    assert report.rows + sum(f.rows for f in report.failed) == len(
        [d for d in DeltaTable(world["data"]).to_pyarrow_table().column("date").to_pylist()
         if d == DATES[-1]])


def test_shadow_side_by_side(world: dict[str, Any]) -> None:
    reg: Registry = world["reg"]
    shadows = publish(reg, {"a0": train_bytes(40), "a2": train_bytes(42)}, "cand", "shadow")
    report = _score(world, alias="shadow")
    assert report.run_id == f"score-{DATES[-1]}-shadow" and report.shadow_tenants == 2
    out = _output(world["out"])
    for row in out.to_pylist():
        if row["tenant_id"] in shadows:
            assert row["shadow_version"] == shadows[row["tenant_id"]] == 2
            assert row["version"] == 1 and row["shadow_score"] is not None
        else:
            assert row["shadow_version"] is None and row["shadow_score"] is None
    a0 = out.filter(pa.compute.equal(out.column("tenant_id"), "a0"))
    want = xgb.Booster(model_file=bytearray(train_bytes(40))).inplace_predict(
        _day(world, "a0").astype(np.float32))
    np.testing.assert_allclose(a0.column("shadow_score").to_pylist(), want, atol=1e-6)
    assert a0.column("score").to_pylist() != a0.column("shadow_score").to_pylist()


class _Killed(Exception):
    pass


def test_killed_run_resumes_and_publishes_once(world: dict[str, Any]) -> None:
    def dies_after_one(ctx: ScoreContext, buckets: list[ScoreBucket],
                       resources: dict[str, float]) -> Iterator[BucketResult]:
        yield score_bucket(ctx, buckets[0])
        raise _Killed

    with pytest.raises(_Killed):
        run_scoring(world["data"], world["reg"], world["out"], run_id="night",
                    settings=QUIET, runner=dies_after_one)
    assert not DeltaTable.is_deltatable(world["out"])  # nothing visible
    staged = sorted(Path(world["out"]).rglob("*.parquet"))
    assert len(staged) == 1
    ran: list[ScoreBucket] = []

    def counting(ctx: ScoreContext, buckets: list[ScoreBucket],
                 resources: dict[str, float]) -> Iterator[BucketResult]:
        ran.extend(buckets)
        yield from run_here(ctx, buckets, resources)

    report = run_scoring(world["data"], world["reg"], world["out"], run_id="night",
                         settings=QUIET, runner=counting)
    assert report.resumed_buckets == 1 and len(ran) == report.buckets - 1
    out = _output(world["out"])
    keys = list(zip(out.column("tenant_id").to_pylist(), out.column("row_index").to_pylist(),
                    strict=True))
    assert len(keys) == len(set(keys)) == report.rows
    files = {Path(u).name for u in DeltaTable(world["out"]).file_uris()}
    assert staged[0].name in files  # the killed attempt's finished bucket was reused
    assert DeltaTable(world["out"]).version() == 0
    again = run_scoring(world["data"], world["reg"], world["out"], run_id="night",
                        settings=QUIET, runner=counting)
    assert again.already_published and DeltaTable(world["out"]).version() == 0


def _dies(ctx: ScoreContext, buckets: list[ScoreBucket],
          resources: dict[str, float]) -> Iterator[BucketResult]:
    raise _Killed
    yield  # pragma: no cover - a generator that dies before its first bucket


def test_resume_reads_the_data_version_it_started_with(world: dict[str, Any]) -> None:
    with pytest.raises(_Killed):
        run_scoring(world["data"], world["reg"], world["out"], run_id="n2", settings=QUIET,
                    runner=_dies)
    late = feature_rows(["a0"], seed=9, dates=DATES[-1:])
    write_features(world["data"], late)  # rows appended after the run started
    report = run_scoring(world["data"], world["reg"], world["out"], run_id="n2",
                         settings=QUIET, runner=run_here)
    assert report.data_version == 0
    fresh = _score(world, run_id="fresh")
    assert fresh.data_version == 1 and report.rows == fresh.rows - late.num_rows


def test_resume_with_other_parameters_is_refused(world: dict[str, Any]) -> None:
    with pytest.raises(_Killed):
        run_scoring(world["data"], world["reg"], world["out"], run_id="n3", settings=QUIET,
                    runner=_dies)
    with pytest.raises(Conflict, match="date"):
        _score(world, run_id="n3", date=DATES[0])
    with pytest.raises(Conflict, match="alias"):
        _score(world, run_id="n3", alias="shadow")
    assert _score(world, run_id="n3").date == DATES[-1]  # as it was: resumes


def test_row_id_column_is_the_row_key(tmp_path: Path) -> None:
    reg = Registry.create(str(tmp_path / "reg"), num_shards=4)
    publish(reg, {"b0": train_bytes(1), "b1": train_bytes(2)}, "r")
    table = feature_rows(["b0", "b1"], row_id=True)
    data = write_features(str(tmp_path / "f"), table)
    report = run_scoring(data, reg, str(tmp_path / "o"), settings=QUIET, runner=run_here)
    assert report.row_key == "row_id"
    out = DeltaTable(str(tmp_path / "o")).to_pyarrow_table()
    assert "row_index" not in out.column_names
    day = table.filter(pa.compute.equal(table.column("date"), DATES[-1]))
    assert sorted(out.column("row_id").to_pylist()) == sorted(day.column("row_id").to_pylist())


def test_infinite_feature_gives_a_null_score(tmp_path: Path) -> None:
    reg = Registry.create(str(tmp_path / "reg"), num_shards=4)
    publish(reg, {"c0": train_bytes(3)}, "r")
    table = feature_rows(["c0"], dates=DATES[-1:])
    amount = table.column("amount").to_pylist()
    amount[2], amount[4] = float("inf"), 1e300
    table = table.set_column(table.schema.get_field_index("amount"), "amount",
                             pa.array(amount, pa.float64()))
    data = write_features(str(tmp_path / "f"), table)
    report = run_scoring(data, reg, str(tmp_path / "o"), settings=QUIET, runner=run_here)
    assert report.invalid_rows == 2
    scores = _output(str(tmp_path / "o")).column("score").to_pylist()
    assert [i for i, s in enumerate(scores) if s is None] == [2, 4]


def test_missing_date_and_table_are_clear_errors(world: dict[str, Any]) -> None:
    with pytest.raises(DataNotFound, match="2030-01-01"):
        _score(world, date="2030-01-01")
    with pytest.raises(DataNotFound, match="no feature table"):
        run_scoring(str(world["tmp"] / "nope"), world["reg"], world["out"], settings=QUIET,
                    runner=run_here)
    assert not DeltaTable.is_deltatable(world["out"])
