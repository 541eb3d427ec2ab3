"""Feature-table helpers: dates, windows, shard-pruned reads, planning statistics."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from training.craft import rule_rows
from training.errors import DataNotFound, InvalidTrainingInput
from training.table import FeatureTable, parse_date, window_dates, write_rows


def test_window_dates() -> None:
    assert window_dates("2024-03-01", 3) == ("2024-02-28", "2024-02-29", "2024-03-01")
    for bad in ("2024-3-1", "2024-02-30", "yesterday"):
        with pytest.raises(InvalidTrainingInput):
            parse_date(bad)


def test_reads_one_shard_and_counts_rows(tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    rows = [rule_rows(f"t{i}", d, 10 + i, seed=i, num_shards=4)
            for i in range(8) for d in ("2024-01-01", "2024-01-02")]
    write_rows(path, pa.concat_tables(rows), num_shards=4)
    table = FeatureTable(path)
    assert table.dates() == ["2024-01-01", "2024-01-02"]
    counts = table.shard_row_counts(["2024-01-02"])
    assert sum(counts.values()) == sum(10 + i for i in range(8))
    shard = next(iter(counts))
    part = table.read_shard(shard, ["2024-01-02"])
    assert part.num_rows == counts[shard]
    assert set(part.column("shard").to_pylist()) == {shard}
    assert set(part.column("date").to_pylist()) == {"2024-01-02"}
    with pytest.raises(InvalidTrainingInput):
        write_rows(path, rows[0], num_shards=8)  # another layout would break bucketing


def test_missing_table_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(DataNotFound):
        FeatureTable(str(tmp_path / "nope")).dates()


def test_direct_file_read_equals_filtered_scan(tmp_path: Path) -> None:
    from deltalake import DeltaTable

    path = str(tmp_path / "t")
    for day in ("2024-01-01", "2024-01-02", "2024-01-03"):  # one commit per day
        write_rows(path, pa.concat_tables([rule_rows(f"t{i}", day, 20, seed=i, num_shards=2)
                                           for i in range(6)]), num_shards=2)
    fast = FeatureTable(path).read_shard(1, ["2024-01-01", "2024-01-03"]).to_pandas()
    scan = DeltaTable(path).to_pyarrow_table(filters=[
        ("shard", "=", 1), ("date", "in", ["2024-01-01", "2024-01-03"])]).to_pandas()
    scan = scan[fast.columns]
    key = list(fast.columns)
    assert len(fast) > 0
    assert fast.sort_values(key).reset_index(drop=True).equals(
        scan.sort_values(key).reset_index(drop=True))
