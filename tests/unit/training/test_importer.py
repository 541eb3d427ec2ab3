"""``tenantry data import``: layout by (shard, date), row checks, rejects, idempotence."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from engine.cli import main
from registry import Registry, shard_of
from registry.errors import RegistryNotFound
from training.errors import InvalidTrainingInput
from training.importer import import_file
from training.source import Layout, TableSource
from training.spec import SpecError, parse_spec

HEADER = "account,ts,tenure_months,plan,monthly_charges,churned\n"
GOOD = [
    "acme,2024-03-01T09:00:00,12,pro,49.5,0",
    "acme,2024-03-01T23:30:00-02:00,3,basic,20,1",  # 01:30 UTC on the 2nd
    "globex,2024-03-02,40,team,,0",  # a date alone; a missing feature value
    "initech.eu,2024-03-02T10:00:00Z,7,,35.25,1",
]
BAD = [
    "bad id!,2024-03-02T10:00:00,5,pro,10,1",
    "acme,yesterday,5,pro,10,1",
    "acme,2024-03-02T10:00:00,five,pro,10,1",
    "acme,2024-03-02T10:00:00,5,pro,10,maybe",
    "acme,2024-03-02T10:00:00,5,pro,10,",
    "acme,2024-03-02T10:00:00,5,pro,10,2",
]
SPEC = {"table": "unused", "tenant_column": "account", "time_column": "ts",
        "label_column": "churned", "features": ["tenure_months", "plan", "monthly_charges"]}


@pytest.fixture()
def reg(tmp_path: Path) -> Registry:
    return Registry.create(str(tmp_path / "registry"), num_shards=4)


def _csv(tmp_path: Path, rows: list[str], name: str = "churn.csv") -> str:
    path = tmp_path / name
    path.write_text(HEADER + "\n".join(rows) + "\n")
    return str(path)


def test_import_lays_out_by_shard_and_date_and_rejects_bad_rows(tmp_path: Path,
                                                                 reg: Registry) -> None:
    out = str(tmp_path / "features")
    report = import_file(_csv(tmp_path, GOOD + BAD), out, parse_spec(SPEC), reg)
    assert (report.rows_read, report.rows_imported, report.rows_rejected) == (10, 4, 6)
    assert report.rejected_by_reason == {
        "feature_not_numeric:tenure_months": 1, "invalid_tenant_id": 1,
        "label_not_binary": 1, "label_not_numeric": 1, "missing_label": 1, "time_not_iso": 1}
    assert [(e["row"], e["reason"], e["value"]) for e in report.examples] == [
        (5, "invalid_tenant_id", "bad id!"), (6, "time_not_iso", "yesterday"),
        (7, "feature_not_numeric:tenure_months", "five"), (8, "label_not_numeric", "maybe"),
        (9, "missing_label", None)]
    assert report.columns == {"tenure_months": "numeric", "plan": "categorical",
                              "monthly_charges": "numeric"}
    assert (report.tenants, report.dates) == (3, ("2024-03-01", "2024-03-02"))
    delta = DeltaTable(out)
    assert set(delta.metadata().partition_columns) == {"shard", "date"}
    meta = json.loads(delta.metadata().description)
    assert (meta["num_shards"], meta["time_column"]) == (4, "ts")
    rows = delta.to_pyarrow_table().to_pylist()
    assert len(rows) == 4
    for row in rows:
        assert row["shard"] == shard_of(row["account"], 4)
        assert row["date"] == row["ts"].strftime("%Y-%m-%d")  # the UTC day
    late = next(r for r in rows if r["tenure_months"] == 3)
    assert late["date"] == "2024-03-02"
    assert next(r for r in rows if r["account"] == "globex")["monthly_charges"] is None
    assert TableSource.open(out, "auto", "ts", "account").layout is Layout.SHARDED
    # shards hash the declared tenant column: another tenant column reads by scanning
    assert TableSource.open(out, "auto", "ts", "plan").layout is Layout.SCAN
    rejects = DeltaTable(report.rejects_table or "").to_pyarrow_table().to_pylist()
    assert sorted(r["row"] for r in rejects) == [5, 6, 7, 8, 9, 10]
    assert {r["reason"] for r in rejects if r["row"] == 10} == {"label_not_binary"}
    assert rejects[0]["source_sha256"] == report.sha256


def test_reimporting_the_same_file_adds_nothing(tmp_path: Path, reg: Registry) -> None:
    out, src = str(tmp_path / "features"), _csv(tmp_path, GOOD + BAD)
    first = import_file(src, out, parse_spec(SPEC), reg)
    versions = DeltaTable(out).version(), DeltaTable(f"{out}/_rejects").version()
    again = import_file(src, out, parse_spec(SPEC), reg)
    assert again.already_imported and again.sha256 == first.sha256
    assert (again.rows_imported, again.rows_rejected) == (0, 0)
    assert (DeltaTable(out).version(), DeltaTable(f"{out}/_rejects").version()) == versions
    other = import_file(_csv(tmp_path, ["umbrella,2024-03-03,1,pro,5,1"], "more.csv"), out,
                        parse_spec(SPEC), reg)
    assert other.rows_imported == 1 and not other.already_imported
    assert DeltaTable(out).to_pyarrow_table().num_rows == 5


def test_a_parquet_source_keeps_its_types(tmp_path: Path, reg: Registry) -> None:
    src = str(tmp_path / "in.parquet")
    pq.write_table(pa.table({
        "account": ["acme", "acme", "bad/id"], "ts": pa.array([1, 2, 3], pa.timestamp("s")),
        "tenure_months": pa.array([1, 2, 3], pa.int16()), "plan": ["a", "b", "c"],
        "monthly_charges": [1.0, None, 2.0], "churned": [True, False, True]}), src)
    report = import_file(src, str(tmp_path / "features"), parse_spec(SPEC), reg)
    assert (report.rows_imported, report.rejected_by_reason) == (2, {"invalid_tenant_id": 1})
    table = DeltaTable(str(tmp_path / "features")).to_pyarrow_table()
    assert table.schema.field("tenure_months").type == pa.float64()
    assert table.schema.field("plan").type in (pa.string(), pa.large_string())
    assert table.column("churned").to_pylist() == [1.0, 0.0]


def test_mostly_numeric_text_is_numeric_and_the_rest_rejected(tmp_path: Path,
                                                              reg: Registry) -> None:
    rows = [f"acme,2024-03-01,{k},pro,{k}.5,0" for k in range(19)]
    rows.append("acme,2024-03-01,1,pro,n/a-ish,0")
    report = import_file(_csv(tmp_path, rows), str(tmp_path / "f"), parse_spec(SPEC), reg)
    assert report.columns["monthly_charges"] == "numeric"
    assert report.rejected_by_reason == {"feature_not_numeric:monthly_charges": 1}


def test_refusals(tmp_path: Path, reg: Registry) -> None:
    src = _csv(tmp_path, GOOD)
    with pytest.raises(RegistryNotFound):
        import_file(src, str(tmp_path / "f"), parse_spec(SPEC), str(tmp_path / "none"))
    with pytest.raises(SpecError) as info:
        import_file(src, str(tmp_path / "f"), parse_spec({**SPEC, "label_column": "y",
                                                          "features": ["tenure_months", "x"]}),
                    reg, spec_name="churn.yaml")
    assert info.value.problems == [
        ("features[1]: column 'x' not in the table (it has: account, ts, tenure_months, plan, "
        "monthly_charges, churned)"),
        ("label_column: column 'y' not in the source (it has: account, ts, tenure_months, "
        "plan, monthly_charges, churned)")]
    import_file(src, str(tmp_path / "f"), parse_spec(SPEC), reg)
    other = Registry.create(str(tmp_path / "reg8"), num_shards=8)
    with pytest.raises(InvalidTrainingInput, match="laid out with 4 shards"):
        import_file(_csv(tmp_path, GOOD[:1], "b.csv"), str(tmp_path / "f"), parse_spec(SPEC),
                    other)


def test_cli_import_json(tmp_path: Path, reg: Registry,
                         capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "churn.yaml"
    spec.write_text("table: features\ntenant_column: account\ntime_column: ts\n"
                    "label_column: churned\nfeatures: {include: ['*']}\n")
    src = _csv(tmp_path, GOOD + BAD[:1])
    assert main(["data", "import", "--from", src, "--spec", str(spec), "--registry", reg.root,
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["out"] == str(tmp_path / "features")  # the spec's table, next to the spec
    assert (doc["rows_imported"], doc["rows_rejected"]) == (4, 1)
    assert main(["data", "import", "--from", src, "--spec", str(spec), "--registry",
                 reg.root]) == 0
    assert "was already imported" in capsys.readouterr().out
