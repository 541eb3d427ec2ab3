"""Reference profiles: quantile bins, missing rates, made by training, stored in the registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from deltalake import DeltaTable

from registry import NewVersion, Registry
from registry.index import TABLES
from training.model import ModelSpec, train_tenant
from training.profile import (
    N_BINS,
    bin_counts,
    distribution,
    feature_matrix,
    model_profile,
    quantile_edges,
    score_values,
)

NAMES = ("a", "b", "c")


def test_continuous_values_fill_ten_even_bins() -> None:
    values = np.random.default_rng(0).normal(size=10_000)
    d = distribution("a", values)
    assert len(d.edges) == N_BINS - 1 and list(d.edges) == sorted(set(d.edges))
    assert np.allclose(d.shares, 0.1, atol=0.002)
    assert d.missing_rate == 0.0 and d.count == 10_000


def test_discrete_values_get_a_bin_each_and_missing_is_apart() -> None:
    values = np.array([0.0] * 70 + [1.0] * 20 + [np.nan] * 10)
    d = distribution("flag", values)
    assert d.edges == (0.0, 1.0)  # <=0 | (0,1] | >1
    assert d.shares == (70 / 90, 20 / 90, 0.0)
    assert d.missing_rate == 0.1 and d.count == 90


def test_nothing_present() -> None:
    d = distribution("empty", np.full(5, np.nan))
    assert (d.edges, d.shares, d.missing_rate, d.count) == ((), (0.0,), 1.0, 0)


def test_bins_are_right_closed_and_match_served_float32() -> None:
    train = np.array([0.1, 0.1, 0.2, 0.3] * 25)
    edges = quantile_edges(train)
    served = np.array([0.1, 0.2, 0.3], dtype=np.float32)  # what a host holds
    counts, missing = bin_counts(served, edges)
    ref, _ = bin_counts(train, edges)
    assert missing == 0
    # each served value lands in the bin its training copies are in
    for value in (0.1, 0.2, 0.3):
        one, _ = bin_counts(np.array([value], np.float32), edges)
        mine, _ = bin_counts(np.array([value]), edges)
        assert one.argmax() == mine.argmax()
    assert counts.sum() == 3 and ref.sum() == 100


def test_scores_of_multiclass_are_the_top_probability() -> None:
    assert score_values(np.array([[0.2, 0.8], [0.6, 0.4]])).tolist() == [0.8, 0.6]
    assert score_values(np.array([0.3, 0.7])).tolist() == [0.3, 0.7]


def test_category_columns_profile_by_code() -> None:
    frame = pd.DataFrame({"n": [1.0, np.nan, 3.0],
                          "c": pd.Categorical.from_codes([0, 1, -1], categories=["x", "y"])})
    m = feature_matrix(frame)
    assert m[:, 0][[0, 2]].tolist() == [1.0, 3.0] and np.isnan(m[1, 0])
    assert m[:2, 1].tolist() == [0.0, 1.0] and np.isnan(m[2, 1])


def _data(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    x[rng.random(n) < 0.2, 2] = np.nan
    return x, (x[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(np.int64)


def test_training_makes_the_profile() -> None:
    x, y = _data(1, 600)
    model = train_tenant("acme", NAMES, x[:500], y[:500], x[500:], y[500:],
                         ModelSpec(n_estimators=5))
    p = model.profile
    assert p is not None and [f.name for f in p.features] == list(NAMES)
    assert abs(p.features[2].missing_rate - np.isnan(x[:500, 2]).mean()) < 1e-12
    assert p.score is not None and p.score.count == 100 and len(p.score.shares) <= N_BINS
    assert p == model_profile(NAMES, x[:500], _predict(model.model_bytes, x[500:]))


def _predict(data: bytes, x: np.ndarray) -> np.ndarray:
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray(data))
    return np.asarray(booster.inplace_predict(x))


def test_profiles_publish_with_their_versions_once(tmp_path: Path) -> None:
    x, y = _data(2, 400)
    reg = Registry.create(str(tmp_path / "reg"), num_shards=4)
    model = train_tenant("acme", NAMES, x[:300], y[:300], x[300:], y[300:],
                         ModelSpec(n_estimators=3))
    staged = reg.stage_artifact("acme", model.model_bytes, "r1")
    nv = NewVersion(staged, NAMES, {"auc": 0.8}, profile=model.profile)
    reg.publish("r1", [nv])
    reg.publish("r1", [nv])  # a retried run writes nothing twice
    assert reg.profiles([("acme", 1), ("acme", 2)]) == {("acme", 1): model.profile}
    rows = DeltaTable(f"{reg.root}/index/profiles").to_pandas()
    assert len(rows) == len(NAMES) + 1 and set(rows["kind"]) == {"feature", "score"}


def test_a_registry_older_than_profiles_gains_the_table(tmp_path: Path) -> None:
    reg = Registry.create(str(tmp_path / "reg"), num_shards=2)
    import shutil

    shutil.rmtree(f"{reg.root}/index/profiles")
    reg = Registry.open(reg.root)
    assert reg.profiles([("acme", 1)]) == {}
    x, y = _data(3, 300)
    model = train_tenant("acme", NAMES, x[:200], y[:200], x[200:], y[200:],
                         ModelSpec(n_estimators=2))
    staged = reg.stage_artifact("acme", model.model_bytes, "r1")
    reg.publish("r1", [NewVersion(staged, NAMES, {"auc": 0.8}, profile=model.profile)])
    assert ("acme", 1) in reg.profiles([("acme", 1)])
    assert TABLES["profiles"].field("edges").type == pa.list_(pa.float64())
