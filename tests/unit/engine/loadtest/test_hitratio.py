"""The one-pass stack-distance curve equals a brute-force LRU simulation at every size."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.loadtest.hitratio import COLD, hit_ratio_curve, simulate_lru, stack_distances
from engine.loadtest.workload import ZipfSampler


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=15), max_size=200))
def test_curve_matches_brute_force_lru_at_every_size(trace: list[int]) -> None:
    curve = hit_ratio_curve(trace)
    for size in range(20):
        assert curve.hits(size) == simulate_lru(trace, size)


def test_zipf_trace_matches_brute_force_for_many_sizes() -> None:
    trace = ZipfSampler(300, 1.1, seed=3).sample(5000).tolist()
    curve = hit_ratio_curve(trace)
    for size in (1, 2, 5, 10, 30, 60, 100, 200, 299, 300, 400):
        assert curve.hits(size) == simulate_lru(trace, size)
    assert curve.distinct_keys == len(set(trace))
    assert np.all(np.diff(curve.ratios()) >= 0)  # LRU has no Belady anomaly


def test_stack_distances_known_sequence() -> None:
    #        a     b     a  c     b  a
    assert stack_distances(list("abacba")).tolist() == [COLD, COLD, 1, COLD, 2, 2]


def test_smallest_size_for_target() -> None:
    curve = hit_ratio_curve(list("abababab"))
    assert curve.smallest_size_for(0.75) == 2
    assert curve.smallest_size_for(0.99) is None
    assert curve.hit_ratio(10) == curve.hit_ratio(2) == 0.75
