"""Per-model footprint: what one tenant's model costs before it goes live.

Artifact bytes, resident memory once loaded (RSS growth over several loaded copies,
because XGBoost allocates outside Python's allocator), load time from bytes, and
single-row / 100-row ``inplace_predict`` time.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from registry.errors import ModelLoadError, UnknownTenant

__all__ = ["Footprint", "measure_footprint", "registry_artifact", "rss_bytes"]

_COPIES = 20
_REPEATS = 200


@dataclass(frozen=True)
class Footprint:
    """Measured cost of one model."""

    tenant_id: str
    version: int | None
    features: int
    trees: int
    artifact_bytes: int
    loaded_bytes: int | None  # RSS growth per loaded copy (None without /proc)
    load_ms: float  # median
    predict_us_1row: float  # median
    predict_us_100rows: float  # median

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def rss_bytes() -> int | None:
    """Resident set size of this process (Linux /proc), or None elsewhere."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _median_us(fn: Any, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return float(np.median(samples)) * 1e6


def measure_footprint(artifact: bytes, tenant_id: str, version: int | None = None,
                      features: int | None = None, copies: int = _COPIES,
                      repeats: int = _REPEATS) -> Footprint:
    """Measure one XGBoost artifact.

    Args:
        artifact: model bytes (UBJSON or JSON).
        tenant_id: for the report.
        version: for the report.
        features: feature width (default: the booster's own ``num_features``).
        copies: boosters loaded to measure memory and load time.
        repeats: predict calls timed per batch size.

    Returns:
        the footprint.

    Raises:
        ModelLoadError: the bytes are not a loadable XGBoost model.
    """
    import xgboost as xgb

    def load() -> xgb.Booster:
        booster = xgb.Booster()
        booster.load_model(bytearray(artifact))
        booster.set_param({"nthread": 1})
        return booster

    try:
        first = load()
    except xgb.core.XGBoostError as exc:
        raise ModelLoadError(f"{tenant_id}: not a valid XGBoost model: "
                             f"{str(exc).splitlines()[0]}") from exc
    width = features or first.num_features()
    rng = np.random.default_rng(0)
    one, hundred = rng.normal(size=(1, width)), rng.normal(size=(100, width))
    first.inplace_predict(one)  # warm up
    gc.collect()
    before = rss_bytes()
    held, load_times = [], []
    for _ in range(copies):
        t0 = time.perf_counter()
        booster = load()
        booster.inplace_predict(one)  # some state is built lazily on first predict
        load_times.append(time.perf_counter() - t0)
        held.append(booster)
    after = rss_bytes()
    loaded = None if before is None or after is None else max(0, (after - before) // copies)
    del held
    return Footprint(
        tenant_id=tenant_id, version=version, features=width,
        trees=int(first.num_boosted_rounds()), artifact_bytes=len(artifact),
        loaded_bytes=loaded, load_ms=round(float(np.median(load_times)) * 1000.0, 4),
        predict_us_1row=round(_median_us(lambda: first.inplace_predict(one), repeats), 2),
        predict_us_100rows=round(_median_us(lambda: first.inplace_predict(hundred), repeats),
                                 2))


def registry_artifact(root: str, tenant_id: str) -> tuple[bytes, int, int]:
    """The production artifact of ``tenant_id`` (sha256-verified by the registry).

    Returns:
        (bytes, version, feature width).

    Raises:
        UnknownTenant: the tenant has no production model.
    """
    from registry import Registry

    reg = Registry.open(root)
    production = reg.get(tenant_id).production
    if production is None:
        raise UnknownTenant(f"tenant {tenant_id!r} has no production model")
    return reg.read_artifact(production), production.version, len(production.feature_names)
