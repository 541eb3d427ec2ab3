"""Nightly per-tenant training on Ray Data, and the synthetic multi-tenant data generator.

Public surface: :func:`run_training` (what ``tenantry train`` calls), :func:`generate`
(``tenantry data generate``), their configuration and report types.
"""

from __future__ import annotations

from training.errors import DataExists, DataNotFound, InvalidTrainingInput
from training.features import FEATURE_NAMES
from training.generate import GenerateSummary, GeneratorConfig, generate
from training.job import run_training
from training.report import TenantFailure, TrainingReport
from training.settings import TrainingSettings
from training.table import FeatureTable

__all__ = [
    "FEATURE_NAMES", "DataExists", "DataNotFound", "FeatureTable", "GenerateSummary",
    "GeneratorConfig", "InvalidTrainingInput", "TenantFailure", "TrainingReport",
    "TrainingSettings", "generate", "run_training",
]
