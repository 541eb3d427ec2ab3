"""From one bucket's Arrow rows to each tenant's training and holdout matrices.

Pure data handling, no I/O. A bucket's rows are grouped by tenant once (through dictionary
codes); numeric features become one float64 matrix (NaN = missing), categorical features
(string/dictionary columns) bucket-wide integer codes. Per tenant, :func:`tenant_data`
splits train from holdout by the :class:`HoldoutRule`, drops the features the tenant never
sends (when asked) and returns a float matrix -- or, with categorical features, a pandas
frame whose category dtype carries the tenant's own categories (XGBoost's native
categorical support stores them in the model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from training.features import DATE_COLUMN, FEATURE_NAMES, LABEL_COLUMN, TENANT_COLUMN

__all__ = ["DAY", "TIME_KEY", "BucketRows", "DataSpec", "HoldoutRule", "TenantData",
           "design", "tenant_data"]

DAY = "__tenantry_day"
"""Column the reader adds: the row's UTC day, ``YYYY-MM-DD``."""
TIME_KEY = "__tenantry_time"
"""Column the reader adds for ``fraction`` holdouts: the row's time as int64 microseconds."""


@dataclass(frozen=True)
class HoldoutRule:
    """Which of a tenant's rows are held out: the last N days of the window, or a fraction."""

    last_n_days: int = 1
    """Rows on the window's last N days (1 = the run's own day, ``last_day``)."""
    fraction: float | None = None
    """Instead: the newest ``fraction`` of each tenant's rows in the window, by time."""

    def describe(self) -> str:
        """The rule as the spec writes it."""
        if self.fraction is not None:
            return f"fraction: {self.fraction}"
        return "last_day" if self.last_n_days == 1 else f"last_n_days: {self.last_n_days}"


@dataclass(frozen=True)
class DataSpec:
    """The columns a run reads and how it splits them (resolved against the table)."""

    tenant_column: str = TENANT_COLUMN
    time_column: str = DATE_COLUMN
    label_column: str = LABEL_COLUMN
    feature_names: tuple[str, ...] = FEATURE_NAMES
    categorical: frozenset[str] = frozenset()
    holdout: HoldoutRule = field(default_factory=HoldoutRule)
    drop_missing: bool = False
    """A feature null in all of a tenant's training rows is left out of its model."""

    @property
    def numeric(self) -> tuple[str, ...]:
        """Numeric features, in model order."""
        return tuple(n for n in self.feature_names if n not in self.categorical)


@dataclass
class BucketRows:
    """One bucket's rows as arrays, grouped by tenant (tenants in id order)."""

    tenants: list[str]
    groups: list[np.ndarray]
    numeric: np.ndarray
    codes: dict[str, np.ndarray]
    values: dict[str, np.ndarray]
    y: np.ndarray
    is_holdout: np.ndarray | None
    time_key: np.ndarray | None
    spec: DataSpec

    @classmethod
    def from_arrow(cls, table: pa.Table, spec: DataSpec,
                   holdout_days: tuple[str, ...] = ()) -> BucketRows:
        """Group ``table`` (tenant, features, label, :data:`DAY` [, :data:`TIME_KEY`]).

        Args:
            table: the bucket's rows.
            spec: what the columns are.
            holdout_days: the days a day-based holdout rule holds out.
        """
        n = table.num_rows
        # Group by tenant through dictionary codes: sorting small ints beats sorting strings.
        encoded = pc.dictionary_encode(table.column(spec.tenant_column)).combine_chunks()
        names = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        by_name = np.argsort(names.astype(str), kind="stable")
        order = np.argsort(np.argsort(by_name)[codes], kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(names))[
            by_name])]).astype(np.int64)
        numeric = np.column_stack([
            table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
            for c in spec.numeric]) if n and spec.numeric else np.empty((n, 0))
        cat_codes, cat_values = {}, {}
        for name in sorted(spec.categorical):
            col = table.column(name)
            if not pa.types.is_dictionary(col.type):
                col = pc.dictionary_encode(col)
            col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
            if pa.types.is_dictionary(col.type) and not isinstance(col, pa.DictionaryArray):
                col = pa.chunked_array([col]).combine_chunks()
            cat_values[name] = np.asarray([str(v) for v in col.dictionary.to_pylist()],
                                          dtype=object)
            cat_codes[name] = col.indices.fill_null(-1).to_numpy(
                zero_copy_only=False).astype(np.int64)
        y = _labels(table.column(spec.label_column))
        is_holdout = None
        if spec.holdout.fraction is None:
            is_holdout = pc.is_in(table.column(DAY), value_set=pa.array(
                holdout_days, pa.string())).to_numpy(zero_copy_only=False)
        tkey = table.column(TIME_KEY).to_numpy(zero_copy_only=False) \
            if TIME_KEY in table.column_names else None
        return cls([str(t) for t in names[by_name].tolist()],
                   [order[bounds[k]:bounds[k + 1]] for k in range(len(names))],
                   numeric, cat_codes, cat_values, y, is_holdout, tkey, spec)


def _labels(col: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_boolean(col.type):
        col = pc.cast(col, pa.int8())
    return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)


@dataclass(frozen=True)
class TenantData:
    """One tenant's training and holdout data, ready for XGBoost."""

    x_train: Any
    y_train: np.ndarray
    x_holdout: Any
    y_holdout: np.ndarray
    feature_names: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]
    dropped: tuple[str, ...] = ()
    unlabelled: int = 0
    holdout_idx: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    """Row indices (into the bucket) of the holdout, for scoring other models on it."""


def _split(rows: BucketRows, idx: np.ndarray) -> np.ndarray:
    rule = rows.spec.holdout
    if rule.fraction is None:
        assert rows.is_holdout is not None
        return rows.is_holdout[idx]
    assert rows.time_key is not None
    n_hold = round(rule.fraction * len(idx))
    mask = np.zeros(len(idx), dtype=bool)
    if n_hold:
        mask[np.argsort(rows.time_key[idx], kind="stable")[len(idx) - n_hold:]] = True
    return mask


def design(rows: BucketRows, idx: np.ndarray, names: tuple[str, ...],
           categories: dict[str, tuple[str, ...]]) -> Any:
    """Rows ``idx`` as the model input for features ``names``.

    Args:
        rows: the bucket.
        idx: row indices.
        names: features in model order (each numeric or categorical in ``rows``).
        categories: per categorical feature, the categories the model knows (values outside
            them become missing).

    Returns:
        A float64 ndarray when every feature is numeric, else a pandas DataFrame with
        float64 and category columns.
    """
    num_index = {n: j for j, n in enumerate(rows.spec.numeric)}
    if not any(n in rows.codes for n in names):
        cols_idx = np.asarray([num_index[n] for n in names], dtype=np.int64)
        return rows.numeric[np.ix_(idx, cols_idx)]
    import pandas as pd

    cols: dict[str, Any] = {}
    for name in names:
        if name in rows.codes:
            known = categories.get(name, ())
            lookup = {v: k for k, v in enumerate(known)}
            remap = np.asarray([lookup.get(v, -1) for v in rows.values[name]] + [-1],
                               dtype=np.int64)
            cols[name] = pd.Categorical.from_codes(remap[rows.codes[name][idx]],
                                                   categories=list(known))
        else:
            cols[name] = rows.numeric[idx, num_index[name]]
    return pd.DataFrame(cols)


def tenant_data(rows: BucketRows, idx: np.ndarray) -> TenantData:
    """Split one tenant's rows into training and holdout data.

    Args:
        rows: the bucket.
        idx: the tenant's row indices.

    Returns:
        The :class:`TenantData`: features the tenant never sends in training are dropped
        when the spec says so; categories are those seen in the tenant's training rows.
    """
    labelled = ~np.isnan(rows.y[idx])
    unlabelled = int(len(idx) - labelled.sum())
    idx = idx[labelled]
    hold = _split(rows, idx)
    train_idx, hold_idx = idx[~hold], idx[hold]
    names, dropped, categories = [], [], {}
    num_index = {n: j for j, n in enumerate(rows.spec.numeric)}
    for name in rows.spec.feature_names:
        if name in rows.codes:
            seen = np.unique(rows.codes[name][train_idx])
            seen = seen[seen >= 0]
            present = bool(seen.size)
            categories[name] = tuple(sorted(rows.values[name][seen].tolist()))
        else:  # (only looked at when it matters: the check costs a pass over the column)
            present = not rows.spec.drop_missing or (bool(train_idx.size) and not np.isnan(
                rows.numeric[train_idx, num_index[name]]).all())
        # A category column needs at least one category: one never sent is always left out.
        if present or (not rows.spec.drop_missing and name not in rows.codes) \
                or not train_idx.size:
            names.append(name)
        else:
            dropped.append(name)
            categories.pop(name, None)
    feature_names = tuple(names)
    return TenantData(design(rows, train_idx, feature_names, categories), rows.y[train_idx],
                      design(rows, hold_idx, feature_names, categories), rows.y[hold_idx],
                      feature_names, categories, tuple(dropped), unlabelled, hold_idx)
