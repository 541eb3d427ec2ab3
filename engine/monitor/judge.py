"""Whether a tenant's day of production traffic has drifted from its model's profile.

Pure policy: the figures come from :mod:`engine.monitor.task`, the thresholds from
:class:`~engine.monitor.settings.MonitorSettings`. A tenant is flagged, with one reason
per finding, when

* a feature's PSI, or the score's, is above ``psi_threshold`` (0.2) -- and, with
  ``noise_aware``, above what sampling noise reaches with that many rows;
* a feature's missing rate is above its training missing rate by more than
  ``missing_rate_increase`` (0.1);
* its logged rows on the day are more than ``volume_factor`` (3) times, or less than a
  third of, the median of the previous ``volume_days`` days (judged once the tenant has
  rows on ``volume_min_days`` of them and either side reaches ``min_rows``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from engine.monitor.psi import Drift
from engine.monitor.settings import MonitorSettings

__all__ = ["Status", "TenantFigures", "Verdict", "Volume", "judge"]


class Status(str, Enum):
    """How far a tenant could be judged."""

    JUDGED = "judged"
    TOO_FEW_ROWS = "too_few_rows"  # fewer than min_rows of its newest version: volume only
    NO_PROFILE = "no_profile"  # the version has no reference profile: volume only


@dataclass(frozen=True)
class TenantFigures:
    """What one tenant's production rows of the day look like against its profile."""

    tenant_id: str
    version: int | None
    status: Status
    rows: int  # rows of ``version`` on the day
    features: tuple[Drift, ...] = ()
    score: Drift | None = None


@dataclass(frozen=True, slots=True)
class Volume:
    """A tenant's logged rows on the day against its recent days."""

    rows: int
    baseline: float | None  # median of the previous days (None: too few days)

    @property
    def ratio(self) -> float | None:
        """``rows / baseline`` (None without a baseline; inf from a zero baseline)."""
        if self.baseline is None:
            return None
        return self.rows / self.baseline if self.baseline else float("inf")


@dataclass(frozen=True)
class Verdict:
    """Flagged or not, and why."""

    flagged: bool
    reasons: tuple[str, ...] = field(default=())


def _psi_reason(d: Drift, what: str, s: MonitorSettings) -> str | None:
    if d.psi is None or d.psi <= s.psi_threshold:
        return None
    if s.noise_aware and d.psi <= d.bound:
        return None
    return f"{what}: PSI {d.psi:.2f} > {s.psi_threshold:g}"


def judge(fig: TenantFigures, volume: Volume, s: MonitorSettings) -> Verdict:
    """The verdict on one tenant (see the module docstring for the rules).

    Args:
        fig: its figures against its profile.
        volume: its logged rows against the previous days.
        s: the thresholds.

    Returns:
        The :class:`Verdict`, reasons in a stable order (score, features, volume).
    """
    reasons: list[str] = []
    if fig.status is Status.JUDGED:
        if fig.score is not None:
            reasons.extend(filter(None, [_psi_reason(fig.score, "score", s)]))
        for d in fig.features:
            reason = _psi_reason(d, f"feature {d.name}", s)
            if reason:
                reasons.append(reason)
            rise = d.missing_rate - d.reference_missing_rate
            if rise > s.missing_rate_increase:
                reasons.append(f"feature {d.name}: missing rate {d.missing_rate:.2f} vs "
                               f"{d.reference_missing_rate:.2f} in training "
                               f"(+{rise:.2f} > +{s.missing_rate_increase:g})")
    ratio = volume.ratio
    big_enough = max(volume.rows, volume.baseline or 0) >= s.min_rows
    if ratio is not None and big_enough and not 1 / s.volume_factor <= ratio <= s.volume_factor:
        reasons.append(f"volume: {volume.rows} rows vs {volume.baseline:g} a day recently "
                       f"(x{ratio:.2f}, outside /{s.volume_factor:g}..x{s.volume_factor:g})")
    return Verdict(bool(reasons), tuple(reasons))
