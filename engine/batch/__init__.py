"""Batch scoring: a day of a feature table scored by every tenant's model on Ray Data.

``tenantry score`` plans one bucket per shard from the feature table's Delta log, runs the
buckets as Ray Data tasks (one block of buckets per CPU; a bucket reads only its shard's
files for the day, loads each of its tenants' models once through the registry and walks
all their serving forests together over the shard's columns), and publishes every
bucket's output file into a Delta predictions table in one commit marked with the run id.
See :func:`engine.batch.job.run_scoring`.
"""

from __future__ import annotations

from engine.batch.job import default_run_id, run_scoring
from engine.batch.report import FailureReason, ScoreReport, TenantFailure
from engine.batch.settings import ScoreSettings

__all__ = ["FailureReason", "ScoreReport", "ScoreSettings", "TenantFailure", "default_run_id",
           "run_scoring"]
