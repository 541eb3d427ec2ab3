"""Helpers for every test: a tiny real XGBoost model, publishing it, polling, and counting
serving's load-time forest self-checks.

Plain functions, imported as ``from tests.conftest import train_tiny, publish_models``
(pytest runs with ``--import-mode=importlib`` and registers this file as
``tests.conftest``, so the import finds the same module). Each area's conftest keeps its
own feature names and passes them in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import xgboost as xgb

from registry import AliasMove, NewVersion, Registry

DEFAULT_FEATURES = ("amount", "age_days", "velocity")


def train_booster(seed: int = 0, *, features: Sequence[str] | int = DEFAULT_FEATURES,
                  rows: int = 200, rounds: int = 6, depth: int = 3,
                  objective: str = "binary:logistic", missing: float = 0.0) -> xgb.Booster:
    """A small real model on seeded normal data; different seeds give different models.

    Args:
        features: the feature names, or a count for a model without names.
        rows, rounds, depth: training rows, boosting rounds, ``max_depth``.
        objective: a one-output XGBoost objective (``reg:*`` trains on the raw signal,
            anything else on its sign).
        missing: share of the training values set to NaN.
    """
    names = None if isinstance(features, int) else list(features)
    width = features if isinstance(features, int) else len(features)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, width))
    x[rng.random(x.shape) < missing] = np.nan
    known = np.nan_to_num(x)
    signal = known[:, 0] * (1 + seed % 3) + 0.3 * rng.normal(size=rows)
    if width > 1:
        signal -= known[:, -1]
    y = signal if objective.startswith("reg:") else (signal > 0).astype(int)
    params = {"objective": objective, "max_depth": depth, "nthread": 1, "seed": seed}
    return xgb.train(params, xgb.DMatrix(x, y, feature_names=names), rounds)


def train_tiny(seed: int = 0, **shape: Any) -> bytes:
    """:func:`train_booster`'s model as UBJSON artifact bytes (same keyword arguments)."""
    return bytes(train_booster(seed, **shape).save_raw("ubj"))


def load_booster(data: bytes) -> xgb.Booster:
    """The XGBoost Booster of UBJSON artifact bytes."""
    booster = xgb.Booster()
    booster.load_model(bytearray(data))
    return booster


def publish_models(reg: Registry, models: Mapping[str, bytes], run_id: str, *,
                   features: Sequence[str] = DEFAULT_FEATURES, alias: str = "production",
                   metrics: Mapping[str, float] | None = None,
                   files: Mapping[str, bytes] | None = None,
                   **fields: Any) -> dict[str, int]:
    """Stage and publish one version per tenant, moving ``alias`` to it; tenant -> version.

    ``files`` are staged beside each artifact; ``fields`` go to each
    :class:`~registry.NewVersion` (``data_date``, ``profile``, …).
    """
    staged = [reg.stage_artifact(t, data, run_id, files) for t, data in models.items()]
    scores = dict(metrics if metrics is not None else {"auc": 0.9, "logloss": 0.3})
    reg.publish(run_id, [NewVersion(s, tuple(features), scores, **fields) for s in staged],
                [AliasMove(s.tenant_id, alias, s.version) for s in staged])
    return {s.tenant_id: s.version for s in staged}


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, every: float = 0.02,
             what: Callable[[], Any] = lambda: "") -> Any:
    """Poll ``cond`` until it returns something truthy (returned); fail after ``timeout``
    seconds, adding ``what()`` to the message."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, f"condition not reached in time {what()}"
        time.sleep(every)


def count_self_checks(monkeypatch: Any) -> list[str]:
    """Count serving's load-time forest self-checks (the real check still runs): the list
    gains one entry per check from now on."""
    import engine.serving.model as model_mod

    calls: list[str] = []
    real = model_mod._selfcheck

    def counted(forest: Any, booster: Any) -> float | None:
        calls.append("check")
        return real(forest, booster)

    monkeypatch.setattr(model_mod, "_selfcheck", counted)
    return calls
