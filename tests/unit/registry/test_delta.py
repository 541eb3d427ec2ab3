"""registry.delta.DeltaTableHandle on real Delta tables in tmp_path: create, append (the
first append creates), concurrent writers, schema merge, application transactions, query,
pickling."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from registry.delta import DeltaTableHandle, sql_str
from registry.errors import RegistryError

SCHEMA = pa.schema([("tenant_id", pa.string()), ("date", pa.string()), ("n", pa.int64())])


def rows(tenant: str, n: int, date: str = "2026-01-01") -> pa.Table:
    return pa.table({"tenant_id": [tenant], "date": [date], "n": [n]})


def handle(path: Path, schema: pa.Schema = SCHEMA) -> DeltaTableHandle:
    return DeltaTableHandle(str(path), schema, partition_by=["date"], label="test/t")


def test_an_absent_table_reads_empty_and_the_first_append_creates_it(tmp_path: Path) -> None:
    t = handle(tmp_path / "t")
    assert t.open() is None and t.version() == -1
    assert t.query().num_rows == 0 and t.query().schema == SCHEMA
    assert t.append(rows("acme", 1)) == 0
    assert t.append(rows("globex", 2, "2026-01-02")) == 1
    assert (tmp_path / "t" / "date=2026-01-02").is_dir()  # partitioned as asked
    got = t.query(f"tenant_id = {sql_str('globex')}", "tenant_id, n").to_pylist()
    assert got == [{"tenant_id": "globex", "n": 2}]
    assert t.sql("SELECT sum(n) AS s FROM t").column("s").to_pylist() == [3]


def test_create_is_idempotent_and_keeps_rows(tmp_path: Path) -> None:
    t = handle(tmp_path / "t")
    t.create({"delta.enableChangeDataFeed": "true"})
    assert t.version() == 0
    t.append(rows("acme", 1))
    t.create()
    assert t.query().num_rows == 1
    dt = t.open()
    assert dt is not None
    assert dt.metadata().configuration.get("delta.enableChangeDataFeed") == "true"


def test_two_writers_racing_from_no_table_lose_no_row(tmp_path: Path) -> None:
    path = tmp_path / "t"
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def write(tenant: str) -> None:
        mine = handle(path)  # each writer its own handle, as two replicas would have
        start.wait()
        try:
            for i in range(8):
                mine.append(rows(tenant, i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    got = handle(path).query(columns="tenant_id, n").to_pylist()
    assert sorted((r["tenant_id"], r["n"]) for r in got) == \
        sorted((t, i) for t in ("a", "b") for i in range(8))


def test_application_transactions_commit_with_the_rows(tmp_path: Path) -> None:
    t = handle(tmp_path / "t")
    assert t.transaction_version("app-1") is None
    t.append(rows("acme", 1), {"app-1": 7, "app-2": 3})
    assert (t.transaction_version("app-1"), t.transaction_version("app-2")) == (7, 3)
    t.append(rows("acme", 2), {"app-1": 9})
    assert t.transaction_version("app-1") == 9


def test_a_schema_that_gained_a_column_merges_it(tmp_path: Path) -> None:
    handle(tmp_path / "t").append(rows("acme", 1))
    wider = pa.schema(list(SCHEMA) + [pa.field("actor", pa.string())])
    t = handle(tmp_path / "t", wider)
    t.append(pa.table({"tenant_id": ["acme"], "date": ["2026-01-01"], "n": [2],
                       "actor": ["dave"]}))
    got = sorted(t.query(columns="n, actor").to_pylist(), key=lambda r: r["n"])
    assert got == [{"n": 1, "actor": None}, {"n": 2, "actor": "dave"}]


def test_rows_that_do_not_fit_the_schema_are_refused(tmp_path: Path) -> None:
    t = handle(tmp_path / "t")
    with pytest.raises((pa.ArrowInvalid, ValueError)):
        t.append(pa.table({"other": [1]}))
    assert t.open() is None  # nothing was created


def test_an_unwritable_location_is_a_registry_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RegistryError, match="could not write test/t"):
        handle(blocker / "t").append(rows("acme", 1))


def test_a_handle_pickles_without_its_open_table(tmp_path: Path) -> None:
    t = handle(tmp_path / "t")
    t.append(rows("acme", 1))
    assert t.open() is not None
    copy = pickle.loads(pickle.dumps(t))
    assert copy.uri == t.uri and copy.schema == SCHEMA
    copy.append(rows("globex", 2))
    assert t.query().num_rows == 2
