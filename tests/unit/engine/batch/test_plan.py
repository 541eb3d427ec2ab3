"""Planning: the day's files per shard in row order, the row key, buckets biggest first."""

from __future__ import annotations

import pickle
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from engine.batch.plan import (
    ModelPair,
    ScoreBucket,
    in_blocks,
    model_pairs,
    open_source,
    plan_buckets,
)
from registry import Registry, shard_of
from training.errors import DataNotFound, InvalidTrainingInput

from .conftest import DATES, SHARDS, feature_rows, publish, train_bytes, write_features


def test_files_in_append_order_pinned_to_a_version(tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    write_features(path, feature_rows(["x0", "x1", "x2"], seed=1))
    write_features(path, feature_rows(["x0", "x1", "x2"], seed=2))
    src = open_source(path)
    assert src.version == 1 and src.row_key is None and src.direct
    assert src.key_field == pa.field("row_index", pa.int64())
    assert src.dates() == list(DATES)
    files = src.shard_files(DATES[-1])
    shard = shard_of("x0", SHARDS)
    uris, rows = files[shard]
    assert len(uris) == 2 and rows > 0
    assert Path(uris[0].removeprefix("file://")).stat().st_mtime <= \
        Path(uris[1].removeprefix("file://")).stat().st_mtime
    old = open_source(path, version=0)
    assert len(old.shard_files(DATES[-1])[shard][0]) == 1
    assert src.feature_columns == ("amount", "age_days", "velocity", "risk")


def test_the_plan_opens_the_table_once_and_tasks_get_none(tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    write_features(path, feature_rows(["x0", "x1"], seed=1))
    src = open_source(path)
    assert src.delta() is src.delta() is src.opened  # dates and files read one open table
    write_features(path, feature_rows(["x0", "x1"], seed=2))
    assert src.delta().version() == src.version == 0  # still the planned version
    shipped = pickle.loads(pickle.dumps(src))
    assert shipped.opened is None and shipped == src
    assert shipped.delta().version() == 0 and shipped.dates() == src.dates()


def test_row_key_and_bad_tables(tmp_path: Path) -> None:
    with_ids = write_features(str(tmp_path / "ids"), feature_rows(["x0"], row_id=True))
    assert open_source(with_ids).row_key == "row_id"
    assert open_source(with_ids, row_key="amount").key_field.name == "amount"
    with pytest.raises(InvalidTrainingInput, match="no column 'nope'"):
        open_source(with_ids, row_key="nope")
    with pytest.raises(DataNotFound):
        open_source(str(tmp_path / "missing"))
    from deltalake import write_deltalake

    flat = str(tmp_path / "flat")
    write_deltalake(flat, feature_rows(["x0"]))
    with pytest.raises(InvalidTrainingInput, match="partitioned"):
        open_source(flat)


def test_buckets_biggest_first_with_their_models(tmp_path: Path) -> None:
    reg = Registry.create(str(tmp_path / "reg"), num_shards=SHARDS)
    publish(reg, {"x0": train_bytes(0), "x1": train_bytes(1)}, "r")
    publish(reg, {"x1": train_bytes(2)}, "s", alias="shadow")
    pairs = model_pairs(reg, shadow=True)
    assert pairs["x1"].shadow is not None and pairs["x1"].shadow.version == 2
    assert pairs["x0"].shadow is None
    assert model_pairs(reg, shadow=False)["x1"].shadow is None
    files = {0: (("a",), 10), 1: (("b",), 300), 3: (("c",), 50), 2: ((), 0)}
    buckets = plan_buckets(files, pairs, SHARDS, parts=1)
    assert [b.shard for b in buckets] == [1, 3, 0]
    for b in buckets:
        assert all(shard_of(p.tenant_id, SHARDS) == b.shard for p in b.models)
    halves = plan_buckets(files, pairs, SHARDS, parts=2, done=[(1, 0)])
    assert [(b.shard, b.part) for b in halves] == [(1, 1), (3, 0), (3, 1), (0, 0), (0, 1)]
    assert sum(len(b.models) for b in plan_buckets(files, pairs, SHARDS, 2)) <= len(pairs)
    assert isinstance(next(iter(pairs.values())), ModelPair)


@pytest.mark.parametrize("blocks", [1, 2, 3, 7, 16])
def test_in_blocks_balances_ray_datas_contiguous_slices(blocks: int) -> None:
    rows = [900, 40, 500, 500, 30, 200, 10, 350, 700, 60, 5, 120, 80, 640, 300, 20]
    buckets = [ScoreBucket(i, 0, 1, (), n, ()) for i, n in enumerate(rows)]
    ordered = in_blocks(buckets, blocks)
    assert sorted(b.shard for b in ordered) == list(range(len(rows)))  # each once
    size, extra = divmod(len(rows), blocks)  # as ray.data.from_items cuts the list
    cuts = np.cumsum([0] + [size + (i < extra) for i in range(blocks)])
    loads = [sum(b.est_rows for b in ordered[lo:hi]) for lo, hi in pairwise(cuts)]
    # no slice exceeds the balanced share by more than the biggest bucket
    assert max(loads) <= sum(rows) / blocks + max(rows)
    if blocks == 2:
        assert sorted(loads) == [2225, 2230]  # of 4,455 rows
