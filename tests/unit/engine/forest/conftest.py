"""The forest tests' model trainer (also used by serving's self-check tests)."""

from __future__ import annotations

from typing import Any

import numpy as np
import xgboost as xgb


# Not tests.conftest's train_tiny: the compiler's parity tests need columns of mixed
# scales (0.01 / 1 / 100, float32), dead columns, a chosen base rate, any XGBoost
# parameter, and the training rows back.
def train(seed: int, *, depth: int = 5, trees: int = 20, features: int = 10, rows: int = 400,
          rate: float = 0.3, missing: float = 0.1, dead_columns: int = 0,
          **params: Any) -> tuple[xgb.Booster, np.ndarray]:
    """A tiny model on random data; ``rate`` is the positive-label base rate."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(rows, features)) * rng.choice([0.01, 1, 100], features)).astype(np.float32)
    x[rng.random(x.shape) < missing] = np.nan
    x[:, :dead_columns] = np.nan
    signal = np.nan_to_num(x[:, -1]) + rng.normal(size=rows)
    y = (signal > np.quantile(signal, 1 - rate)).astype(int)
    y[0], y[1] = 0, 1  # both classes, even at 1% / 99%
    if str(params.get("objective", "")).startswith("reg:squarederror"):
        y = signal * 10
    p = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": depth,
         "nthread": 1, "seed": seed, **params}
    return xgb.train(p, xgb.DMatrix(x, y), trees), x
