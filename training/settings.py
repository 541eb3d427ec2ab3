"""Training configuration (``TENANTRY_TRAIN_*``, ``TENANTRY_RAY_*``).

The job takes a :class:`TrainingSettings`; the CLI builds one with
:meth:`TrainingSettings.from_env` from the environment ``main`` read, then applies its flags.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from registry.settings import env_names, process_env, read_env
from training.errors import InvalidTrainingInput

__all__ = ["TrainingSettings"]


@dataclass(frozen=True)
class TrainingSettings:
    """Knobs of the nightly training job; every field has an env var ``TENANTRY_TRAIN_<NAME>``."""

    window_days: int = 7
    """Days of data per run, ending at (and including) the run's date; that day is the holdout."""
    min_train_rows: int = 50
    """Fewer training rows than this and the tenant is skipped (``too_few_rows``)."""
    min_holdout_rows: int = 10
    """Fewer holdout rows (or one class only) and the tenant is skipped (``holdout_unusable``)."""
    n_estimators: int = 50
    """Boosting rounds per model."""
    max_depth: int = 5
    """Tree depth."""
    learning_rate: float = 0.3
    """XGBoost eta."""
    seed: int = 0
    """Mixed with a stable hash of each tenant id into that tenant's training seed."""
    auc_tolerance: float = 0.01
    """Promotion gate: the new model becomes production unless its holdout AUC is lower than
    production's on the same holdout by more than this; otherwise it becomes ``shadow``."""
    buckets_per_shard: int = 1
    """Split each registry shard into this many training buckets (finer load balancing)."""
    scan_buckets: int = 0
    """Buckets for a table not laid out by shard (each scans the window once and keeps the
    tenants that hash to it); 0 = one per CPU (``num_cpus``, else this machine's)."""
    num_cpus: int | None = None
    """CPUs of the local Ray started when none is running (``TENANTRY_RAY_NUM_CPUS``)."""
    ray_address: str | None = None
    """Ray cluster to connect to (``TENANTRY_RAY_ADDRESS``; default: Ray's own discovery)."""
    progress: bool = True
    """Print progress on stderr while buckets complete."""
    halt_after_buckets: int = 0
    """Crash-test hook: after this many buckets (0 = never), write ``halt_marker`` and stop
    before publishing, as if the process were killed there."""
    halt_marker: str | None = None
    """File the halt hook creates when it stops (so a test knows when to kill)."""
    task_resources: str = ""
    """Custom Ray resources every training task asks for, ``name=amount[,…]`` (e.g.
    ``training=1``), which keeps the tasks on nodes that offer them, as cluster.yaml's
    training nodes do; empty = CPUs only."""

    def __post_init__(self) -> None:
        if self.window_days < 2:
            raise InvalidTrainingInput("window_days must be >= 2 (training days + holdout day)")
        if self.min_train_rows < 2 or self.min_holdout_rows < 2:
            raise InvalidTrainingInput("min_train_rows and min_holdout_rows must be >= 2")
        if self.n_estimators < 1 or self.max_depth < 1 or self.buckets_per_shard < 1:
            raise InvalidTrainingInput("n_estimators, max_depth, buckets_per_shard must be >= 1")
        if self.scan_buckets < 0:
            raise InvalidTrainingInput("scan_buckets must be >= 0")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise InvalidTrainingInput("num_cpus must be >= 1")
        self.resources()  # a malformed task_resources fails here, not inside a Ray task

    def scan_parts(self) -> int:
        """How many scan buckets a run over a table not laid out by shard uses."""
        return self.scan_buckets or self.num_cpus or os.cpu_count() or 1

    def resources(self) -> dict[str, float]:
        """``task_resources`` parsed: ``{"training": 1.0}`` for ``training=1``.

        Raises:
            InvalidTrainingInput: a part that is not ``name=amount`` with amount > 0.
        """
        out: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in self.task_resources.split(","))):
            name, sep, amount = (x.strip() for x in part.partition("="))
            try:
                value = float(amount)
            except ValueError:
                value = 0.0
            if not name or not sep or not value > 0:
                raise InvalidTrainingInput(
                    f"task_resources part {part!r} is not name=amount with amount > 0")
            out[name] = value
        return out

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrainingSettings:
        """Build settings from ``TENANTRY_TRAIN_<FIELD>`` (and ``TENANTRY_RAY_*``) variables.

        Args:
            environ: the environment ``main`` read (None: this process's).

        Returns:
            The settings, defaults where a variable is absent.

        Raises:
            InvalidTrainingInput: a variable that does not parse as its field's type.
        """
        return cls(**read_env(cls, env_names(cls, "TENANTRY_TRAIN_"), process_env(environ),
                              InvalidTrainingInput))

    def with_overrides(self, **changes: Any) -> TrainingSettings:
        """A copy with the non-None ``changes`` applied (CLI flags over env)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

