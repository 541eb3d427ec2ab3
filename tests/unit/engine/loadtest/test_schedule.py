"""Open-loop schedules: counts, spacing, ramps and the split across processes."""

from __future__ import annotations

import numpy as np
import pytest

from engine.loadtest.schedule import (
    Arrivals,
    Stage,
    parse_rates,
    send_offsets,
    split_round_robin,
)


def test_uniform_hold_is_evenly_spaced() -> None:
    offsets = send_offsets(Stage(200.0, 2.0))
    assert len(offsets) == 400
    assert np.allclose(np.diff(offsets), 1 / 200)


def test_ramp_then_hold_rates() -> None:
    stage = Stage(400.0, 2.0, ramp_s=1.0, ramp_from_rps=100.0)
    offsets = send_offsets(stage)
    assert len(offsets) == stage.expected_requests() == 250 + 800
    first_half = np.count_nonzero(offsets < 0.5)
    assert first_half == pytest.approx(0.5 * 0.5 * (100 + 250), abs=2)  # 100 -> 250 req/s
    assert np.count_nonzero(offsets >= 1.0) == 800
    assert np.all(np.diff(offsets) > 0) and offsets[-1] < stage.total_s


def test_poisson_mean_rate() -> None:
    offsets = send_offsets(Stage(500.0, 4.0), Arrivals.POISSON, seed=7)
    assert len(offsets) == pytest.approx(2000, rel=0.05)
    gaps = np.diff(offsets)
    assert gaps.std() == pytest.approx(gaps.mean(), rel=0.15)  # exponential gaps


def test_split_keeps_every_request_once_and_shape() -> None:
    shares = split_round_robin(10, 3)
    assert sorted(np.concatenate(shares).tolist()) == list(range(10))
    assert [len(s) for s in shares] == [4, 3, 3]


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        send_offsets(Stage(0.0, 1.0))
    with pytest.raises(ValueError):
        send_offsets(Stage(1e7, 10.0))  # unbounded stage
    with pytest.raises(ValueError):
        parse_rates("10,-1")
    assert parse_rates("200, 50,100") == [50.0, 100.0, 200.0]
