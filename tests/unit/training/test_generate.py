"""The synthetic data generator: deterministic, heavy-tailed, degenerate tenants, drift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from registry import shard_of
from training.errors import DataExists
from training.features import FEATURE_NAMES
from training.generate import GeneratorConfig, generate, tenant_day_rows, tenant_profiles
from training.table import FeatureTable

CONFIG = GeneratorConfig(tenants=24, days=3, seed=5, num_shards=4, mean_rows=150)


def _read_all(path: str, shards: int) -> pd.DataFrame:
    table = FeatureTable(path)
    frames = [table.read_shard(s, table.dates()).to_pandas() for s in range(shards)]
    return pd.concat(frames).sort_values(["tenant_id", "date"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, pd.DataFrame]:
    path = str(tmp_path_factory.mktemp("gen") / "features")
    generate(path, CONFIG)
    return path, _read_all(path, CONFIG.num_shards)


def test_same_seed_same_table_other_seed_differs(generated: tuple[str, pd.DataFrame],
                                                 tmp_path: Path) -> None:
    _, first = generated
    again = str(tmp_path / "again")
    generate(again, CONFIG)
    pd.testing.assert_frame_equal(first, _read_all(again, CONFIG.num_shards))
    other = str(tmp_path / "other")
    generate(other, GeneratorConfig(**{**CONFIG.__dict__, "seed": 6}))
    assert not first.equals(_read_all(other, CONFIG.num_shards))


def test_layout_one_partition_per_day_shards_match_registry(
        generated: tuple[str, pd.DataFrame]) -> None:
    path, df = generated
    table = FeatureTable(path)
    assert table.dates() == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert table.num_shards() == CONFIG.num_shards
    assert (df["shard"] == df["tenant_id"].map(lambda t: shard_of(t, 4))).all()
    assert list(df.columns[3:-1]) == list(FEATURE_NAMES)
    assert all(name.isidentifier() and not name.startswith("f_") for name in FEATURE_NAMES)


def test_degenerate_tenants_and_missing_values(generated: tuple[str, pd.DataFrame]) -> None:
    _, df = generated
    profiles = {p.tenant_id: p for p in tenant_profiles(CONFIG)}
    sizes = df.groupby("tenant_id").size()
    tiny = [t for t, p in profiles.items() if p.kind == "tiny"]
    single = [t for t, p in profiles.items() if p.kind == "single_class"]
    assert "tenant-00001" in tiny and "tenant-00002" in single
    assert all(sizes.get(t, 0) < 50 for t in tiny)
    assert all(df.loc[df.tenant_id == t, "label"].nunique() == 1 for t in single)
    base = df[~df.tenant_id.isin(single)].groupby("tenant_id")["label"].mean()
    assert base.max() - base.min() > 0.1  # tenants have their own base rates
    assert df[list(FEATURE_NAMES)].isna().mean().mean() > 0.01


def test_sizes_are_heavy_tailed() -> None:
    sizes = np.array([p.total_rows for p in
                      tenant_profiles(GeneratorConfig(tenants=500, seed=1))])
    assert sizes.max() > 8 * np.median(sizes)
    assert (sizes < 50).sum() >= 5  # some below the training minimum
    assert 600 < sizes.mean() < 1500


def test_relationships_differ_and_drift() -> None:
    config = GeneratorConfig(tenants=60, days=6, seed=2)
    profiles = list(tenant_profiles(config))
    assert len({p.weights for p in profiles}) == len(profiles)
    assert {"stable", "gradual", "shift", "bad_days"} <= {p.drift for p in profiles}
    bad_tenants = [p for p in profiles if p.drift == "bad_days" and p.kind == "normal"
                   and p.base_rate < 0.3 and p.total_rows > 600]
    assert bad_tenants
    for p in bad_tenants:
        bad = p.bad_days[0]
        good = next(d for d in range(6) if d not in p.bad_days)
        _, y_bad = tenant_day_rows(p, bad, config)
        _, y_good = tenant_day_rows(p, good, config)
        # most labels are inverted on a broken day: a low base rate turns into a high one
        assert y_bad.mean() > y_good.mean() + 0.2


def test_refuses_to_overwrite_without_flag(generated: tuple[str, pd.DataFrame]) -> None:
    path, _ = generated
    with pytest.raises(DataExists):
        generate(path, CONFIG)
