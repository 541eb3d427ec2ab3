"""Open-loop send schedules: rate stages that ramp from the previous rate and then hold.

A schedule is a sorted array of *intended* send offsets (seconds from the stage start).
Latency is measured from these intended times, so a slow server cannot slow the
generator down and hide its own queueing (no coordinated omission).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

__all__ = [
    "MAX_REQUESTS_PER_STAGE",
    "Arrivals",
    "Stage",
    "parse_rates",
    "send_offsets",
    "split_round_robin",
]

MAX_REQUESTS_PER_STAGE = 2_000_000


class Arrivals(str, Enum):
    """How send times are spaced inside a stage."""

    UNIFORM = "uniform"
    POISSON = "poisson"


@dataclass(frozen=True)
class Stage:
    """One load stage: ramp linearly from ``ramp_from_rps`` over ``ramp_s``, then hold.

    Only requests intended during the hold part are measured; the ramp warms the server.
    """

    rate_rps: float
    hold_s: float
    ramp_s: float = 0.0
    ramp_from_rps: float = 0.0

    @property
    def total_s(self) -> float:
        """Ramp plus hold duration in seconds."""
        return self.ramp_s + self.hold_s

    def expected_requests(self) -> int:
        """Number of requests the stage sends (ramp and hold)."""
        ramp = 0.5 * (self.rate_rps + self.ramp_from_rps) * self.ramp_s
        return math.floor(ramp + self.rate_rps * self.hold_s)


def _cumulative_inverse(stage: Stage, counts: np.ndarray) -> np.ndarray:
    """Times t at which the cumulative request count N(t) reaches each of ``counts``."""
    r0, r1, ramp = stage.ramp_from_rps, stage.rate_rps, stage.ramp_s
    n_ramp = 0.5 * (r0 + r1) * ramp
    out = np.empty_like(counts, dtype=np.float64)
    in_ramp = counts < n_ramp
    if ramp > 0 and np.any(in_ramp):
        k = counts[in_ramp]
        a = (r1 - r0) / (2.0 * ramp)  # N(t) = r0 t + a t^2 inside the ramp
        if abs(a) < 1e-12:
            out[in_ramp] = k / r0
        else:
            out[in_ramp] = (-r0 + np.sqrt(r0 * r0 + 4.0 * a * k)) / (2.0 * a)
    held = ~in_ramp
    out[held] = ramp + (counts[held] - n_ramp) / r1
    return out


def send_offsets(stage: Stage, arrivals: Arrivals = Arrivals.UNIFORM,
                 seed: int = 0) -> np.ndarray:
    """Intended send offsets (seconds from the stage start), sorted ascending.

    Args:
        stage: the rate stage.
        arrivals: uniform spacing (deterministic) or Poisson (exponential gaps).
        seed: random seed for Poisson arrivals.

    Returns:
        float64 array of offsets in ``[0, stage.total_s)``.

    Raises:
        ValueError: on a non-positive rate or duration, or a stage too large to bound.
    """
    if stage.rate_rps <= 0 or stage.hold_s <= 0 or stage.ramp_s < 0 or stage.ramp_from_rps < 0:
        raise ValueError("stage rate and hold must be positive, ramp non-negative")
    n = stage.expected_requests()
    if n > MAX_REQUESTS_PER_STAGE:
        raise ValueError(f"stage would send {n} requests (limit {MAX_REQUESTS_PER_STAGE})")
    if arrivals is Arrivals.UNIFORM:
        counts = np.arange(n, dtype=np.float64)
    else:
        rng = np.random.default_rng(seed)
        counts = np.cumsum(rng.exponential(1.0, size=n)) - 1.0
        counts = counts[counts < n]
    offsets = _cumulative_inverse(stage, counts)
    return offsets[offsets < stage.total_s]


def split_round_robin(n: int, parts: int) -> list[np.ndarray]:
    """Indices ``0..n-1`` dealt round-robin into ``parts`` shares (one per load process).

    Args:
        n: number of requests.
        parts: number of shares (>= 1).

    Returns:
        ``parts`` int64 index arrays; each share keeps the schedule's rate shape.
    """
    if parts < 1:
        raise ValueError("parts must be >= 1")
    return [np.arange(p, n, parts, dtype=np.int64) for p in range(parts)]


def parse_rates(text: str) -> list[float]:
    """Parse ``"50,100,200"`` into ascending positive rates.

    Raises:
        ValueError: if any rate is not a positive number.
    """
    problem = ValueError(f"expected comma-separated positive numbers (req/s), got {text!r}")
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise problem from None
    if not rates or any(not math.isfinite(r) or r <= 0 for r in rates):
        raise problem
    return sorted(rates)
