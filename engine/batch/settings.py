"""Scoring configuration (``TENANTRY_SCORE_*``, ``TENANTRY_RAY_*``).

The job takes a :class:`ScoreSettings`; the CLI builds one with
:meth:`ScoreSettings.from_env` from the environment ``main`` read, then applies its flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from registry.errors import ValidationError
from registry.settings import env_names, process_env, read_env

__all__ = ["ScoreSettings"]


@dataclass(frozen=True)
class ScoreSettings:
    """Knobs of the scoring job; each field has an env var ``TENANTRY_SCORE_<NAME>``."""

    buckets_per_shard: int = 1
    """Split each shard into this many buckets (tasks), for finer load balancing."""
    num_cpus: int | None = None
    """CPUs of the local Ray started when none is running (``TENANTRY_RAY_NUM_CPUS``)."""
    ray_address: str | None = None
    """Ray cluster to join (``TENANTRY_RAY_ADDRESS``, else ``RAY_ADDRESS``)."""
    progress: bool = True
    """Print a line on stderr per finished bucket."""
    halt_after_buckets: int = 0
    """Crash-test hook: after this many finished buckets (0 = never), write ``halt_marker``
    and stop before committing, as if the process were killed there."""
    halt_marker: str | None = None
    """File the halt hook creates when it stops (so a test knows when to kill)."""
    task_resources: str = ""
    """Custom Ray resources every scoring task asks for, ``name=amount[,…]``; empty = CPUs."""
    blocks: int = 0
    """Ray Data blocks (tasks) the buckets are grouped into, each running its buckets in
    turn; 0 = one per CPU of the cluster. A task costs tens of milliseconds to schedule
    and start, so on a small cluster fewer, larger tasks finish sooner; buckets are spread
    so that the blocks get about the same rows."""

    def __post_init__(self) -> None:
        if self.buckets_per_shard < 1:
            raise ValidationError("buckets_per_shard must be >= 1")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ValidationError("num_cpus must be >= 1")
        if self.blocks < 0:
            raise ValidationError("blocks must be >= 0 (0: one per CPU)")
        self.resources()

    def resources(self) -> dict[str, float]:
        """``task_resources`` parsed: ``{"batch": 1.0}`` for ``batch=1``.

        Raises:
            ValidationError: a part that is not ``name=amount`` with amount > 0.
        """
        out: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in self.task_resources.split(","))):
            name, sep, amount = (x.strip() for x in part.partition("="))
            try:
                value = float(amount)
            except ValueError:
                value = 0.0
            if not name or not sep or not value > 0:
                raise ValidationError(f"task_resources part {part!r} is not name=amount > 0")
            out[name] = value
        return out

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ScoreSettings:
        """Settings from ``TENANTRY_SCORE_<FIELD>`` / ``TENANTRY_RAY_<FIELD>`` variables.

        Raises:
            ValidationError: a variable that does not parse as its field's type.
        """
        return cls(**read_env(cls, env_names(cls, "TENANTRY_SCORE_"),
                              process_env(environ)))

    def with_overrides(self, **changes: Any) -> ScoreSettings:
        """A copy with the non-None ``changes`` applied (CLI flags over env)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
