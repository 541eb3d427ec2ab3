"""Population stability index and the drift of one variable against its reference bins.

PSI = sum over bins of ``(a - e) * ln(a / e)`` with ``e`` the reference (training) share
and ``a`` the production share of each bin, both floored at :data:`EPS` so an empty bin
is finite. Missing values are not a bin: their rate is compared on its own. Rules of
thumb: < 0.1 stable, 0.1-0.2 moderate, > 0.2 a real shift.

PSI of two samples of one distribution is not 0: it is about ``chi2(bins - 1) x (1/n +
1/m)`` for ``n`` production and ``m`` reference values. :func:`noise_bound` is that
chi-square's 99.9% quantile, so a PSI above it is unlikely to be sampling noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from registry.types import BinnedDistribution
from training.profile import bin_counts

__all__ = ["EPS", "Drift", "drift", "noise_bound", "psi"]

EPS = 1e-4
_Z999 = 3.090232  # standard normal 99.9% quantile


def psi(expected: np.ndarray | tuple[float, ...], actual: np.ndarray | tuple[float, ...]) -> float:
    """The population stability index of ``actual`` shares against ``expected`` ones.

    Args:
        expected: reference shares per bin (sum 1).
        actual: production shares per bin, same bins.

    Returns:
        PSI >= 0 (0 when the shares are equal).

    Raises:
        ValueError: the two have different numbers of bins.
    """
    e = np.maximum(np.asarray(expected, dtype=np.float64), EPS)
    a = np.maximum(np.asarray(actual, dtype=np.float64), EPS)
    if e.shape != a.shape:
        raise ValueError(f"{e.size} reference bins vs {a.size} production bins")
    return float(np.sum((a - e) * np.log(a / e)))


def noise_bound(bins: int, n: int, m: int) -> float:
    """The PSI that sampling noise alone exceeds 0.1% of the time.

    Args:
        bins: bins compared.
        n: production values.
        m: reference values.

    Returns:
        ``chi2_0.999(bins - 1) * (1/n + 1/m)`` (Wilson-Hilferty's chi-square quantile);
        0 with a single bin, infinity with no values on either side.
    """
    k = bins - 1
    if k < 1:
        return 0.0
    if n < 1 or m < 1:
        return math.inf
    q = k * (1 - 2 / (9 * k) + _Z999 * math.sqrt(2 / (9 * k))) ** 3
    return q * (1 / n + 1 / m)


@dataclass(frozen=True, slots=True)
class Drift:
    """One variable of production rows against its reference."""

    name: str
    psi: float | None  # None: no value present on one side
    bound: float  # noise_bound for these counts
    missing_rate: float
    reference_missing_rate: float
    count: int  # production values present

    def to_json(self) -> dict[str, object]:
        """The ``features`` entry of ``monitor report --json``."""
        return {"name": self.name, "psi": self.psi, "missing_rate": self.missing_rate,
                "reference_missing_rate": self.reference_missing_rate}


def drift(values: np.ndarray, reference: BinnedDistribution) -> Drift:
    """Bin ``values`` with the reference's edges and compare.

    Args:
        values: production values, NaN = missing.
        reference: the variable's reference bins.

    Returns:
        The :class:`Drift`.
    """
    counts, missing = bin_counts(values, reference.edges)
    present = int(counts.sum())
    total = present + missing
    value: float | None = None
    if present and reference.count and len(reference.shares) == len(counts):
        value = psi(reference.shares, counts / present)
    return Drift(reference.name, value, noise_bound(len(counts), present, reference.count),
                 missing / total if total else 0.0, reference.missing_rate, present)
