"""Monitoring configuration (``TENANTRY_MONITOR_*``, ``TENANTRY_RAY_*``).

The job takes a :class:`MonitorSettings`; the CLI builds one with
:meth:`MonitorSettings.from_env` from the environment ``main`` read, then applies its flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from registry.errors import ValidationError
from registry.settings import env_names, process_env, read_env

__all__ = ["MonitorSettings"]


@dataclass(frozen=True)
class MonitorSettings:
    """Thresholds and knobs of ``tenantry monitor run``; env ``TENANTRY_MONITOR_<NAME>``."""

    min_rows: int = 100
    """Rows of one version on the day needed to judge its drift (fewer: ``too_few_rows``,
    only volume is judged)."""
    psi_threshold: float = 0.2
    """A feature's (or the score's) PSI above this flags the tenant..."""
    noise_aware: bool = True
    """...when it is also above what sampling noise alone reaches with these row counts
    (the 99.9% chi-square bound, PSI ~ chi2(bins-1) x (1/rows + 1/reference rows)); it only
    matters for small samples (at 100 rows vs 5,000 training rows: 0.28)."""
    missing_rate_increase: float = 0.1
    """A feature whose missing rate rose by more than this over training flags the tenant."""
    volume_factor: float = 3.0
    """Logged rows on the day above this times, or below 1/this of, the recent median flag
    the tenant."""
    volume_days: int = 7
    """Days before the judged one that make the volume baseline (their median)."""
    volume_min_days: int = 3
    """Days of those on which the tenant has logged rows before its volume is judged (a
    day of the log without its rows counts as 0 in the median)."""
    tenants_per_bucket: int = 500
    """Tenants per Ray Data task (each reads the day's rows of its tenants)."""
    num_cpus: int | None = None
    """CPUs of the local Ray started when none is running (``TENANTRY_RAY_NUM_CPUS``)."""
    ray_address: str | None = None
    """Ray cluster to join (``TENANTRY_RAY_ADDRESS``, else ``RAY_ADDRESS``)."""
    progress: bool = True
    """Print a line on stderr per finished bucket."""

    def __post_init__(self) -> None:
        for name in ("min_rows", "volume_days", "tenants_per_bucket"):
            if getattr(self, name) < 1:
                raise ValidationError(f"{name} must be >= 1")
        if self.volume_factor <= 1:
            raise ValidationError("volume_factor must be > 1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MonitorSettings:
        """Settings from ``TENANTRY_MONITOR_<FIELD>`` / ``TENANTRY_RAY_<FIELD>`` variables.

        Raises:
            ValidationError: a variable that does not parse as its field's type.
        """
        return cls(**read_env(cls, env_names(cls, "TENANTRY_MONITOR_"),
                              process_env(environ)))

    def with_overrides(self, **changes: Any) -> MonitorSettings:
        """A copy with the non-None ``changes`` applied (CLI flags over env)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
