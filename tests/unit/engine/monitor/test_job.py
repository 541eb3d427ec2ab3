"""The monitoring job in-process (no Ray): verdicts, one commit per run id, the metrics file,
``monitor report`` and ``registry trend``."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from deltalake import DeltaTable

from engine.metrics import MonitorJobMetrics
from engine.monitor.job import run_monitoring
from engine.monitor.log import PredictionLog
from engine.monitor.report import tenant_report
from engine.monitor.settings import MonitorSettings
from engine.monitor.tables import MONITORING, PREDICTIONS, PROM_FILE, DeltaAppender
from engine.monitor.task import BucketResult, MonitorBucket, MonitorContext, judge_bucket
from registry import AliasMove, ModelVersion, NewVersion, Registry
from registry.errors import NotFound, ValidationError
from training.errors import DataNotFound
from training.model import ModelSpec, train_tenant

NAMES = ("a", "b", "c")
DAY = datetime(2026, 3, 5, 12, tzinfo=UTC).timestamp()
SETTINGS = MonitorSettings(progress=False, tenants_per_bucket=2)


def in_process(ctx: MonitorContext, buckets: list[MonitorBucket]) -> Iterator[BucketResult]:
    return (judge_bucket(ctx, b) for b in buckets)


def _rows(rng: np.random.Generator, n: int, shift: float = 0.0,
          missing: float = 0.0) -> np.ndarray:
    x = rng.normal(size=(n, 3))
    x[:, 1] += shift
    x[rng.random(n) < missing, 2] = np.nan
    return x


def _train(reg: Registry, tenant: str, seed: int, run: str, shift: float = 0.0) -> int:
    rng = np.random.default_rng(seed)
    x = _rows(rng, 1500, shift)
    y = (x[:, 0] + x[:, 1] - shift + 0.5 * rng.normal(size=len(x)) > 0).astype(np.int64)
    m = train_tenant(tenant, NAMES, x[:1200], y[:1200], x[1200:], y[1200:],
                     ModelSpec(n_estimators=5))
    staged = reg.stage_artifact(tenant, m.model_bytes, run)
    reg.publish(run, [NewVersion(staged, NAMES, {"auc": m.holdout.auc or 0.0},
                                 data_date=run[-10:], profile=m.profile)],
                [AliasMove(tenant, "production", staged.version)])
    return staged.version


def _serve(reg: Registry, log: PredictionLog, tenant: str, x: np.ndarray,
           version: int | None = None) -> None:
    mv: ModelVersion = reg.get(tenant).production if version is None \
        else reg.snapshot().version(tenant, version)  # type: ignore[assignment]  # published
    booster = reg.load_booster(mv)
    for i in range(0, len(x), 10):  # requests of 10 rows
        chunk = x[i:i + 10].astype(np.float32)
        log.after_predict(tenant, mv, chunk, booster.inplace_predict(chunk), f"q{i}", False, 0)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    reg = Registry.create(str(tmp_path_factory.mktemp("mon") / "reg"), num_shards=4)
    for k, tenant in enumerate(("calm", "shifted", "holes", "renewed", "tiny")):
        _train(reg, tenant, k, f"{tenant}-2026-03-01")
    _train(reg, "renewed", 9, "renewed-2026-03-04", shift=3.0)  # v2 on the shifted data
    rng = np.random.default_rng(42)
    table = DeltaAppender.for_registry(reg, PREDICTIONS)
    clock = {"now": DAY}
    log = PredictionLog(table, sample=1.0, first_per_hour=0, buffer_rows=10**6,
                        clock=lambda: clock["now"])
    for back in (3, 2, 1):  # earlier days: the volume baseline (calm: 300 a day)
        clock["now"] = DAY - back * 86400
        _serve(reg, log, "calm", _rows(rng, 300))
    clock["now"] = DAY
    _serve(reg, log, "calm", _rows(rng, 400))
    _serve(reg, log, "shifted", _rows(rng, 400, shift=3.0))
    _serve(reg, log, "holes", _rows(rng, 400, missing=0.5))
    _serve(reg, log, "renewed", _rows(rng, 60), version=1)  # the morning, before v2
    _serve(reg, log, "renewed", _rows(rng, 400, shift=3.0))
    _serve(reg, log, "tiny", _rows(rng, 30))
    log.close()
    return reg


def test_verdicts(world: Registry) -> None:
    report = run_monitoring(world, settings=SETTINGS, runner=in_process)
    assert (report.date, report.run_id) == ("2026-03-05", "monitor-2026-03-05")
    assert report.flagged == ("holes", "shifted")
    assert (report.tenants, report.judged, report.too_few_rows) == (5, 4, 1)
    assert report.rows == 400 * 4 + 60 + 30
    shifted = tenant_report(DeltaAppender.for_registry(world, MONITORING), "shifted").to_json()
    assert [f["name"] for f in shifted["features"] if f["psi"] > 0.2] == ["b"]
    assert any(r.startswith("feature b: PSI") for r in shifted["reasons"])
    holes = tenant_report(DeltaAppender.for_registry(world, MONITORING), "holes").to_json()
    assert holes["reasons"] and all("missing rate" in r for r in holes["reasons"])
    renewed = tenant_report(DeltaAppender.for_registry(world, MONITORING), "renewed").to_json()
    assert (renewed["version"], renewed["rows"], renewed["flagged"]) == (2, 400, False)


def test_a_run_id_is_written_once_and_counted(world: Registry) -> None:
    first = run_monitoring(world, run_id="again", settings=SETTINGS, runner=in_process)
    second = run_monitoring(world, run_id="again", settings=SETTINGS, runner=in_process)
    assert second.already_done and not first.already_done
    assert (second.flagged, second.tenants, second.rows) == (first.flagged, first.tenants,
                                                             first.rows)
    rows = DeltaTable(f"{world.root}/monitoring").to_pandas()
    assert (rows["run_id"] == "again").sum() == 5
    values = MonitorJobMetrics.parse(world.store.read(PROM_FILE).decode())
    assert values["runs:already_done"] >= 1 and values["flagged"] == 2
    assert first.metrics_file.endswith(PROM_FILE)


def test_failures_are_counted_and_clear(world: Registry, tmp_path: Path) -> None:
    before = MonitorJobMetrics.parse(world.store.read(PROM_FILE).decode()) \
        if world.store.exists(PROM_FILE) else {}
    with pytest.raises(DataNotFound, match="no rows on 2026-01-01"):
        run_monitoring(world, date="2026-01-01", settings=SETTINGS, runner=in_process)
    after = MonitorJobMetrics.parse(world.store.read(PROM_FILE).decode())
    assert after["runs:failed"] == before.get("runs:failed", 0) + 1
    empty = Registry.create(str(tmp_path / "empty"), 2)
    with pytest.raises(DataNotFound, match="no prediction log"):
        run_monitoring(empty, settings=SETTINGS, runner=in_process)
    with pytest.raises(NotFound):
        tenant_report(DeltaAppender.for_registry(empty, MONITORING), "calm")


def test_trend_is_the_version_history(world: Registry) -> None:
    points = world.trend("renewed")
    assert [p.version for p in points] == [1, 2]
    assert [p.data_date for p in points] == ["2026-03-01", "2026-03-04"]
    assert all(p.value is not None and 0.5 < p.value <= 1 for p in points)
    with pytest.raises(ValidationError, match="they record: auc"):
        world.trend("renewed", "rmse")


def test_trend_cli(world: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    assert main(["registry", "trend", "renewed", "--registry", world.root]) == 0
    text = capsys.readouterr().out
    assert "renewed auc over 2 versions" in text and "v2" in text and "change" in text
    assert main(["registry", "trend", "renewed", "--registry", world.root, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [p["version"] for p in doc["points"]] == [1, 2]
    assert doc["change"] == pytest.approx(doc["last"] - doc["first"])


def test_tables_pickle_without_their_handle(world: Registry) -> None:
    table = DeltaAppender.for_registry(world, PREDICTIONS)
    assert table.handle() is not None
    copy = pickle.loads(pickle.dumps(table))
    assert copy.sql("SELECT COUNT(*) AS n FROM t").column("n")[0].as_py() > 0
