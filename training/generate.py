"""Synthetic multi-tenant feature table that behaves like real data, deterministic by seed.

Each tenant gets a :class:`TenantProfile`: a heavy-tailed (log-normal) number of rows, its own
base rate and feature -> label relationship (linear, threshold and U-shaped effects plus an
interaction), its own feature scales and missing-value rates, and a drift pattern:

- ``stable``: the relationship does not change;
- ``gradual``: weights and base rate move a little every day (newer models do better);
- ``shift``: the relationship is replaced on one day (models trained after it do better);
- ``bad_days``: on a few days most labels are inverted (a broken upstream job), so a model
  trained on such a day does worse than the one it would replace.

A few tenants are degenerate on purpose: ``tiny`` ones have fewer rows than training needs,
``single_class`` ones never see a positive label. Tenant index 1 is always tiny and index 2
always single-class, so even a dozen tenants exhibits every type.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from registry import shard_of
from training.errors import DataExists, InvalidTrainingInput
from training.features import FEATURE_NAMES, table_schema
from training.frame import HoldoutRule
from training.settings import TrainingSettings
from training.spec import FeatureSelection, GateSpec, MinRows, TrainingSpec, XGBoostSpec
from training.table import FeatureTable, parse_date, write_rows

__all__ = [
    "GenerateSummary",
    "GeneratorConfig",
    "TenantProfile",
    "default_spec",
    "generate",
    "tenant_day_rows",
    "tenant_profiles",
]

# (transform, a, b) per feature: how a standardised latent z becomes the raw value.
_TRANSFORMS: tuple[tuple[str, float, float], ...] = (
    ("lognormal", 3.5, 1.2), ("count", 1.0, 0.6), ("count", 2.3, 0.6), ("lognormal", 3.4, 0.8),
    ("count", 5.5, 1.2), ("lognormal", 1.0, 1.0), ("count", -1.0, 0.9), ("count", 0.3, 0.5),
    ("count", 0.5, 0.6), ("score", 100.0, 0.0), ("score", 1.0, 0.0), ("lognormal", 2.0, 1.5),
    ("hour", 24.0, 0.0), ("binary", 0.6, 0.0), ("count", -2.0, 1.0), ("score", 0.5, 0.0),
    ("count", 0.8, 0.5), ("lognormal", 5.0, 1.0), ("count", 1.8, 0.6), ("count", -1.2, 0.8),
)
_SHAPES = ("linear", "step", "ushape")
_DRIFTS = ("stable", "gradual", "shift", "bad_days")


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate; every field has a default suitable for a quick look."""

    tenants: int = 100
    days: int = 8
    seed: int = 0
    num_shards: int = 16
    start_date: str = "2024-01-01"
    mean_rows: float = 1000.0
    """Mean rows per tenant over all days (the median is ~60% of it: sizes are log-normal)."""
    size_sigma: float = 1.0
    """Spread of log(rows); 1.0 gives a few tenants ~20x the median."""


@dataclass(frozen=True)
class TenantProfile:
    """One tenant's data-generating process."""

    tenant_id: str
    index: int
    kind: str  # "normal", "tiny" or "single_class"
    drift: str
    total_rows: int
    base_rate: float
    weights: tuple[float, ...]
    shapes: tuple[str, ...]
    weights_after: tuple[float, ...]
    interaction: tuple[int, int, float]
    offsets: tuple[float, ...]
    missing: tuple[float, ...]
    shift_day: int
    bad_days: tuple[int, ...]


@dataclass(frozen=True)
class GenerateSummary:
    """What :func:`generate` wrote."""

    path: str
    tenants: int
    days: int
    rows: int
    dates: tuple[str, ...]
    kinds: dict[str, int]
    drifts: dict[str, int]


def _tenant_id(index: int) -> str:
    return f"tenant-{index:05d}"


def _sparse_weights(rng: np.random.Generator, n: int) -> np.ndarray:
    w = np.zeros(n)
    active = rng.choice(n, size=int(rng.integers(3, 8)), replace=False)
    w[active] = rng.normal(0.0, 1.0, size=active.size)
    return w * (rng.uniform(1.5, 3.0) / max(float(np.linalg.norm(w)), 1e-9))


def tenant_profiles(config: GeneratorConfig) -> Iterator[TenantProfile]:
    """Yield every tenant's profile, deterministically from ``config.seed``.

    Args:
        config: the generator configuration.

    Yields:
        One :class:`TenantProfile` per tenant, in index order.
    """
    n_feat = len(FEATURE_NAMES)
    median = config.mean_rows / np.exp(config.size_sigma ** 2 / 2)
    for index in range(config.tenants):
        rng = np.random.default_rng([config.seed, index])
        u = rng.uniform()
        kind = ("tiny" if index == 1 or u < 0.03 else
                "single_class" if index == 2 or u < 0.05 else "normal")
        rows = float(np.exp(rng.normal(np.log(median), config.size_sigma)))
        if kind == "tiny":
            rows = float(rng.integers(5, 40))
        rows = min(max(rows, 60.0 if kind == "normal" else 5.0), 50 * config.mean_rows)
        drift = _DRIFTS[int(rng.choice(4, p=[0.4, 0.25, 0.2, 0.15]))]
        missing = np.where(rng.uniform(size=n_feat) < 0.3, rng.uniform(0.01, 0.3, n_feat), 0.0)
        missing[rng.uniform(size=n_feat) < 0.03] = 1.0  # a feature this tenant never sends
        a, b = rng.choice(n_feat, size=2, replace=False)
        yield TenantProfile(
            tenant_id=_tenant_id(index), index=index, kind=kind, drift=drift,
            total_rows=int(rows), base_rate=float(np.clip(rng.beta(1.5, 8.0), 0.01, 0.6)),
            weights=tuple(_sparse_weights(rng, n_feat)),
            shapes=tuple(_SHAPES[i] for i in rng.choice(3, size=n_feat, p=[0.5, 0.3, 0.2])),
            weights_after=tuple(_sparse_weights(rng, n_feat)),
            interaction=(int(a), int(b), float(rng.normal(0.0, 0.8))),
            offsets=tuple(rng.normal(0.0, 0.5, n_feat)),
            missing=tuple(missing),
            shift_day=int(rng.integers(1, max(config.days, 2))),
            bad_days=tuple(int(d) for d in rng.choice(
                max(config.days, 1), size=min(2, config.days), replace=False)),
        )


def _raw(z: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    for j, (kind, a, b) in enumerate(_TRANSFORMS):
        x = z[:, j] + offsets[j]
        if kind == "lognormal":
            out[:, j] = np.round(np.exp(a + b * x), 2)
        elif kind == "count":
            out[:, j] = np.floor(np.exp(a + b * x))
        elif kind == "score":
            out[:, j] = np.round(a / (1.0 + np.exp(-1.7 * x)), 4)
        elif kind == "hour":
            out[:, j] = np.floor(a / (1.0 + np.exp(-1.7 * x))) % 24
        else:  # binary
            out[:, j] = (x > a).astype(float)
    return out


def _signal(p: TenantProfile, z: np.ndarray, day: int, days: int) -> np.ndarray:
    w = np.asarray(p.weights)
    if p.drift == "gradual":
        w = w + (day / max(days - 1, 1)) * (np.asarray(p.weights_after) - w) * 0.8
    elif p.drift == "shift" and day >= p.shift_day:
        w = np.asarray(p.weights_after)
    terms = np.where(np.asarray(p.shapes) == "step", (z > 0.5).astype(float) * 2.0 - 0.6,
                     np.where(np.asarray(p.shapes) == "ushape", np.abs(z) - 0.8, z))
    a, b, w_ab = p.interaction
    return terms @ w + w_ab * z[:, a] * z[:, b]


def _intercept(p: TenantProfile, days: int) -> float:
    rng = np.random.default_rng([p.index, 7919])
    s = _signal(p, _latent(rng, 4000), 0, days)
    lo, hi = -20.0, 20.0
    for _ in range(60):  # bisection: mean sigmoid(s + b) == base rate
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.mean(1 / (1 + np.exp(-(s + mid)))) < p.base_rate else (lo, mid)
    return (lo + hi) / 2


def _latent(rng: np.random.Generator, n: int) -> np.ndarray:
    risk = rng.normal(size=(n, 1))  # a shared factor makes features correlate, as real ones do
    return 0.5 * risk + np.sqrt(0.75) * rng.normal(size=(n, len(FEATURE_NAMES)))


def tenant_day_rows(p: TenantProfile, day: int, config: GeneratorConfig,
                    intercept: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One tenant's rows for one day.

    Args:
        p: the tenant's profile.
        day: day index, 0-based.
        config: the generator configuration.
        intercept: the logit intercept for the tenant's base rate (computed if omitted).

    Returns:
        ``(features, labels)``: float64 ``(n, 20)`` with NaN for missing, and int8 ``(n,)``.
    """
    rng = np.random.default_rng([config.seed, p.index, day + 1])
    n = int(rng.poisson(p.total_rows / max(config.days, 1)))
    z = _latent(rng, n)
    b0 = _intercept(p, config.days) if intercept is None else intercept
    if p.drift == "gradual":
        b0 += 0.3 * day / max(config.days - 1, 1)
    prob = 1.0 / (1.0 + np.exp(-(_signal(p, z, day, config.days) + b0)))
    labels = (rng.uniform(size=n) < prob).astype(np.int8)
    if p.drift == "bad_days" and day in p.bad_days:
        flip = rng.uniform(size=n) < 0.8
        labels = np.where(flip, 1 - labels, labels).astype(np.int8)
    if p.kind == "single_class":
        labels[:] = 0
    x = _raw(z, np.asarray(p.offsets))
    x[rng.uniform(size=x.shape) < np.asarray(p.missing)] = np.nan
    return x, labels


def generate(out: str, config: GeneratorConfig, *, overwrite: bool = False) -> GenerateSummary:
    """Write the feature table: one Delta commit per day, partitioned by shard and date.

    Only one day of rows is in memory at a time.

    Args:
        out: table location (created).
        config: what to generate.
        overwrite: replace an existing table at ``out``.

    Returns:
        A :class:`GenerateSummary`.

    Raises:
        DataExists: ``out`` already holds a table and ``overwrite`` is false.
        InvalidTrainingInput: non-positive tenants, days or shards, or a bad start date.
    """
    if config.tenants < 1 or config.days < 1 or config.num_shards < 1:
        raise InvalidTrainingInput("tenants, days and shards must all be >= 1")
    start = dt.date.fromisoformat(parse_date(config.start_date))
    if FeatureTable(out).exists() and not overwrite:
        raise DataExists(f"{out!r} already holds a feature table (pass --overwrite to replace)")
    profiles = list(tenant_profiles(config))
    intercepts = [_intercept(p, config.days) for p in profiles]
    shards = [shard_of(p.tenant_id, config.num_shards) for p in profiles]
    dates, total = [], 0
    for day in range(config.days):
        date = (start + dt.timedelta(days=day)).isoformat()
        parts: list[pa.Table] = []
        for p, b0, shard in zip(profiles, intercepts, shards):
            x, y = tenant_day_rows(p, day, config, b0)
            cols: dict[str, object] = {"tenant_id": [p.tenant_id] * len(y),
                                       "date": [date] * len(y),
                                       "shard": np.full(len(y), shard, dtype=np.int32)}
            cols.update({name: x[:, j] for j, name in enumerate(FEATURE_NAMES)})
            cols["label"] = y
            parts.append(pa.table(cols, schema=table_schema()))
        rows = pa.concat_tables(parts)
        write_rows(out, rows, num_shards=config.num_shards, overwrite=overwrite and day == 0)
        dates.append(date)
        total += rows.num_rows
    count = lambda attr: {k: sum(getattr(p, attr) == k for p in profiles)
                          for k in sorted({getattr(p, attr) for p in profiles})}
    return GenerateSummary(path=out, tenants=config.tenants, days=config.days, rows=total,
                           dates=tuple(dates), kinds=count("kind"), drifts=count("drift"))


def default_spec(table: str, settings: TrainingSettings | None = None) -> TrainingSpec:
    """The spec of the synthetic fraud table (``tenantry data generate``): today's behaviour.

    Twenty fixed features (all kept, even when a tenant never sends one), ``tenant_id``,
    ``date``, 0/1 ``label``, binary objective, the run's date as the holdout, gate on AUC;
    the window, thresholds, tree parameters and tolerance come from ``settings``.

    Args:
        table: the feature table.
        settings: job settings (default: :class:`TrainingSettings`' defaults).

    Returns:
        The :class:`TrainingSpec`.
    """
    s = settings or TrainingSettings()
    return TrainingSpec(
        table=table, tenant_column="tenant_id", time_column="date", label_column="label",
        features=FeatureSelection(columns=FEATURE_NAMES), missing_features="keep",
        objective="binary",
        xgboost=XGBoostSpec(n_estimators=s.n_estimators, max_depth=s.max_depth,
                            learning_rate=s.learning_rate, seed=s.seed),
        window_days=s.window_days, holdout=HoldoutRule(),
        min_rows=MinRows(train=s.min_train_rows, holdout=s.min_holdout_rows),
        gate=GateSpec(metric="auc", tolerance=s.auc_tolerance))
