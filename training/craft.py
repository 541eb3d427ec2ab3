"""Hand-made feature rows for tests, demos and incident reproductions.

Where :mod:`training.generate` draws realistic tenants at random, this builds exactly the
rows asked for: a tenant whose label is a fixed rule of one feature, inverted on chosen days,
too small, single-class, or absent on a day.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from registry import shard_of
from training.features import FEATURE_NAMES, table_schema

__all__ = ["rule_rows", "tenant_rows"]


def tenant_rows(tenant_id: str, date: str, x: np.ndarray, y: np.ndarray,
                num_shards: int) -> pa.Table:
    """Rows of one tenant on one day in the feature-table schema.

    Args:
        tenant_id: the tenant (any string: invalid ids are allowed, to test rejection).
        date: ``YYYY-MM-DD``.
        x: ``(n, 20)`` float features, NaN = missing.
        y: ``(n,)`` 0/1 labels.
        num_shards: shard count used for the ``shard`` column.

    Returns:
        An Arrow table in :func:`training.features.table_schema`.
    """
    n = len(y)
    cols: dict[str, object] = {
        "tenant_id": [tenant_id] * n, "date": [date] * n,
        "shard": np.full(n, shard_of(tenant_id, num_shards), dtype=np.int32)}
    cols.update({name: np.asarray(x[:, j], dtype=np.float64)
                 for j, name in enumerate(FEATURE_NAMES)})
    cols["label"] = np.asarray(y, dtype=np.int8)
    return pa.table(cols, schema=table_schema())


def rule_rows(tenant_id: str, date: str, n: int, *, seed: int, num_shards: int,
              feature: int = 0, inverted: bool = False, noise: float = 0.0,
              constant_label: int | None = None) -> pa.Table:
    """``n`` rows whose label is ``feature > 0`` (or its inverse), with optional label noise.

    Args:
        tenant_id: the tenant.
        date: the day.
        n: number of rows.
        seed: random seed of the features and noise.
        num_shards: shard count used for the ``shard`` column.
        feature: index of the feature that decides the label.
        inverted: label is ``feature <= 0`` instead (a broken day).
        noise: fraction of labels flipped at random.
        constant_label: every label is this value (a single-class tenant).

    Returns:
        An Arrow table in :func:`training.features.table_schema`.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURE_NAMES)))
    y = (x[:, feature] > 0).astype(np.int8)
    if inverted:
        y = 1 - y
    if noise:
        flip = rng.uniform(size=n) < noise
        y = np.where(flip, 1 - y, y).astype(np.int8)
    if constant_label is not None:
        y = np.full(n, constant_label, dtype=np.int8)
    return tenant_rows(tenant_id, date, x, y, num_shards)
