"""Settings from the environment, the report's JSON, and ``tenantry score`` (no Ray)."""

from __future__ import annotations

import json
from typing import Any

import pytest

import engine.batch.job as job_mod
from engine.batch import ScoreReport, ScoreSettings, TenantFailure
from engine.cli import main
from registry.errors import ValidationError

from .conftest import DATES, run_here

CONTRACT = {"run_id", "rows", "tenants", "failed", "rows_per_s", "output"}


def test_settings_from_env() -> None:
    s = ScoreSettings.from_env({"TENANTRY_SCORE_BUCKETS_PER_SHARD": "3",
                                "TENANTRY_SCORE_HALT_AFTER_BUCKETS": "1",
                                "TENANTRY_SCORE_PROGRESS": "no",
                                "TENANTRY_RAY_NUM_CPUS": "2", "RAY_ADDRESS": "auto",
                                "TENANTRY_SCORE_TASK_RESOURCES": "batch=1",
                                "TENANTRY_SCORE_BLOCKS": "4"})
    assert (s.buckets_per_shard, s.halt_after_buckets, s.progress, s.num_cpus,
            s.ray_address, s.blocks) == (3, 1, False, 2, "auto", 4)
    assert ScoreSettings().blocks == 0  # one per CPU
    assert s.resources() == {"batch": 1.0}
    assert s.with_overrides(num_cpus=None, buckets_per_shard=2).buckets_per_shard == 2
    with pytest.raises(ValidationError, match="TENANTRY_SCORE_BUCKETS_PER_SHARD"):
        ScoreSettings.from_env({"TENANTRY_SCORE_BUCKETS_PER_SHARD": "many"})
    with pytest.raises(ValidationError):
        ScoreSettings(task_resources="batch")
    with pytest.raises(ValidationError):
        ScoreSettings(buckets_per_shard=0)
    with pytest.raises(ValidationError, match="blocks"):
        ScoreSettings(blocks=-1)


def test_report_json_round_trip() -> None:
    failure = TenantFailure("t1", "no_model", "no production model", rows=4)
    report = ScoreReport("r", "2024-01-01", 10, 2, (failure,), 5.0, "/o", 2.0,
                         shadow_failed=(TenantFailure("t2", "load_failed", "x", "shadow", 3),))
    doc = report.to_json()
    assert CONTRACT <= set(doc) and list(doc)[:6] == ["run_id", "rows", "tenants", "failed",
                                                      "rows_per_s", "output"]
    assert doc["failed"] == [{"tenant_id": "t1", "reason": "no_model",
                              "detail": "no production model", "alias": "production",
                              "rows": 4}]
    assert doc["failed_count"] == 1 and doc["failed_reasons"] == {"no_model": 1}
    back = ScoreReport.from_json(json.loads(json.dumps(doc)))
    assert back.failed == (failure,) and back.shadow_failed == report.shadow_failed
    assert "not scored: no_model 1" in report.summary_text()


def test_cli_json_and_errors(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(job_mod, "ray_runner", lambda settings: run_here)
    argv = ["score", "--data", world["data"], "--registry", world["reg"].root,
            "--out", world["out"], "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert CONTRACT <= set(doc) and doc["run_id"] == f"score-{DATES[-1]}"
    assert [f["tenant_id"] for f in doc["failed"]] == ["a6", "a7"]
    assert "[score] bucket" in captured.err  # progress goes to stderr
    assert main(argv + ["--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["already_published"] is True
    assert main(["score", "--data", world["data"] + "-missing", "--registry",
                 world["reg"].root, "--out", world["out"]]) != 0
    err = capsys.readouterr().err
    assert err.startswith("tenantry: error:") and len(err.strip().splitlines()) == 1
    assert main(argv + ["--date", "2024-13-01"]) != 0
    assert "invalid date" in capsys.readouterr().err
