from __future__ import annotations

import math

import numpy as np
import pytest

from engine.serving.validation import parse_body, to_matrix
from registry.errors import ValidationError

NAMES = ("amount", "age", "velocity")
INDEX = {n: i for i, n in enumerate(NAMES)}


def test_lists_and_dicts_and_nulls() -> None:
    x = to_matrix([[1, 2.5, None], [0, 0, 0]], NAMES, INDEX)
    assert x.dtype == np.float32 and x.shape == (2, 3) and math.isnan(x[0, 2])
    y = to_matrix([{"velocity": 3, "amount": 1}], NAMES, INDEX)
    assert y[0, 0] == 1 and math.isnan(y[0, 1]) and y[0, 2] == 3


@pytest.mark.parametrize("instances, message", [
    ([[1, 2]], "row 0 has 2 values; this model expects 3"),
    ([[1, 2, 3], [1, 2, 3, 4]], "row 1 has 4 values"),
    ([[1, "x", 3]], "row 0, feature age: expected a number"),
    ([[1, True, 3]], "expected a number or null, got bool"),
    ([[1, 1e400, 3]], "infinite"),
    ([{"amount": 1, "colour": 2}], "unknown feature name(s) 'colour'"),
    ([[1, 2, 3], {"amount": 1}], "every row must be a list"),
    (["abc"], "each instance must be a list"),
])
def test_bad_rows_say_what_is_wrong(instances: list, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        to_matrix(instances, NAMES, INDEX)
    assert message in str(err.value)


@pytest.mark.parametrize("body, message", [
    (b"not json", "not valid JSON"),
    (b'{"instances": [[NaN, 1, 2]]}', "NaN is not valid JSON"),
    (b'{"rows": []}', '"instances"'),
    (b'{"instances": []}', "non-empty"),
    (b"[1, 2]", '"instances"'),
    (b'{"instances": [[1,2,3],[1,2,3],[1,2,3]]}', "too many rows: 3 > limit 2"),
])
def test_bad_bodies(body: bytes, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_body(body, max_rows=2)
    assert message in str(err.value)
