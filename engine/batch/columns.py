"""A bucket's feature columns as float32 arrays, converted once and shared by its tenants."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["BucketColumns"]


class BucketColumns:
    """The bucket's columns: numeric ones as float32 (NaN = missing), text ones coded with
    a model's categories (one it never saw is missing), each converted on first use."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table
        self._cache: dict[str, np.ndarray | str] = {}
        self._text: dict[str, tuple[list[str], np.ndarray] | str] = {}
        self._inf: dict[str, bool] = {}

    @property
    def num_rows(self) -> int:
        """Rows of the bucket."""
        return self._table.num_rows

    def numeric(self, name: str) -> np.ndarray:
        """Column ``name`` of every row as float32 (beyond float32's range: inf).

        Raises:
            KeyError: no such column, or not numeric (the message says which).
        """
        col = self._cache.get(name)
        if col is None:
            col = self._cache[name] = self._convert(name)
        if isinstance(col, str):
            raise KeyError(col)
        return col

    def has_inf(self, name: str) -> bool:
        """Whether the numeric column ``name`` holds an infinite value anywhere."""
        found = self._inf.get(name)
        if found is None:
            found = self._inf[name] = bool(np.isinf(self.numeric(name)).any())
        return found

    def matrix(self, names: Sequence[str], rows: np.ndarray,
               categories: Mapping[int, Mapping[str, int]] | None = None) -> np.ndarray:
        """``(len(rows), len(names))`` float32; NaN = missing.

        Args:
            names: the model's features.
            rows: the tenant's rows of the bucket.
            categories: per categorical column, category -> the model's code.

        Raises:
            KeyError: a column is missing, not numeric, or (categorical) not text (message
                says which).
        """
        cols = []
        for j, name in enumerate(names):
            if categories and j in categories:
                cols.append(self._codes(name, categories[j], rows))
            else:
                cols.append(self.numeric(name)[rows])
        return np.column_stack(cols) if cols else np.empty((len(rows), 0), np.float32)

    def _codes(self, name: str, codes: Mapping[str, int], rows: np.ndarray) -> np.ndarray:
        """A categorical column's values as the model's codes (NaN: null or unseen)."""
        found = self._text.get(name)
        if found is None:
            found = self._text[name] = self._encode(name)
        if isinstance(found, str):
            raise KeyError(found)
        values, index = found
        lookup = np.array([codes.get(v, np.nan) for v in values] + [np.nan], np.float32)
        return lookup[index[rows]]

    def _encode(self, name: str) -> tuple[list[str], np.ndarray] | str:
        if name not in self._table.column_names:
            return f"no column {name!r}"
        col = self._table.column(name)
        text = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
        if not (pa.types.is_string(text) or pa.types.is_large_string(text)):
            return f"column {name!r} is {col.type}, not text: the model's {name} is categorical"
        encoded = pc.dictionary_encode(pc.cast(col, pa.string())).combine_chunks()
        values = encoded.dictionary.to_pylist()
        return values, encoded.indices.fill_null(len(values)).to_numpy(zero_copy_only=False)

    def _convert(self, name: str) -> np.ndarray | str:
        if name not in self._table.column_names:
            return f"no column {name!r}"
        try:
            values = pc.cast(self._table.column(name), pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return f"column {name!r} is not numeric ({self._table.column(name).type})"
        with np.errstate(over="ignore"):  # beyond float32: inf, a null score for its rows
            return values.to_numpy(zero_copy_only=False).astype(np.float32)
