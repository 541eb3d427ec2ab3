"""Compiled forest vs XGBoost Booster: compile/load time, predict latency, memory.

One command (run it with one OpenMP thread, as the model hosts do)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/forest_bench.py [--trees 50] [--depth 5]

Trains one model like the BASELINES one (1k rows x 20 features, ``hist``, nthread=1, 10%
NaN), then times, interleaved round by round so machine noise hits both sides alike:
``compile_forest(ubj)`` vs ``Booster().load_model(ubj)``, and ``predict`` vs
``inplace_predict`` on 1 and 100 rows. Prints medians (microseconds) and their ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import xgboost as xgb

from engine.forest import compile_forest


def _timed(fn: Callable[[], Any], reps: int) -> float:
    """Mean microseconds per call over ``reps`` back-to-back calls."""
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps * 1e6


def main() -> None:
    """Train, time, print."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trees", type=int, default=50)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, args.features)).astype(np.float32)
    y = (x[:, 0] + rng.normal(size=1000) > 0.5).astype(int)
    x[rng.random(x.shape) < 0.1] = np.nan
    params = {"objective": "binary:logistic", "tree_method": "hist",
              "max_depth": args.depth, "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(x, y), args.trees)
    ubj = bytes(booster.save_raw("ubj"))
    forest = compile_forest(ubj)
    one, hundred = x[:1].copy(), x[:100].copy()
    diff = float(np.abs(forest.predict(x) - booster.inplace_predict(x)).max())

    cases: dict[str, tuple[Callable[[], Any], int]] = {
        "compile_forest": (lambda: compile_forest(ubj), 200),
        "Booster.load_model(ubj)": (lambda: xgb.Booster().load_model(bytearray(ubj)), 200),
        "forest.predict 1 row": (lambda: forest.predict(one), 2000),
        "inplace_predict 1 row": (lambda: booster.inplace_predict(one), 2000),
        "forest.predict 100 rows": (lambda: forest.predict(hundred), 300),
        "inplace_predict 100 rows": (lambda: booster.inplace_predict(hundred), 300),
    }
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):
        for name, (fn, reps) in cases.items():
            samples[name].append(_timed(fn, reps))
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(f"model: {args.trees} trees, depth {forest.depth}, {args.features} features; "
          f"artifact {len(ubj):,} B; forest.nbytes {forest.nbytes:,} B "
          f"({forest.left.size} nodes); max |p - xgb| over 1k rows = {diff:.2e}")
    for name, us in med.items():
        print(f"  {name:26s} {us:9.1f} us")
    for ours, theirs in (("compile_forest", "Booster.load_model(ubj)"),
                         ("forest.predict 1 row", "inplace_predict 1 row"),
                         ("forest.predict 100 rows", "inplace_predict 100 rows")):
        print(f"  {ours} / {theirs}: {med[ours] / med[theirs]:.2f}")


if __name__ == "__main__":
    main()
