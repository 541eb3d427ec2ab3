"""Nightly per-tenant training on Ray Data, and the synthetic multi-tenant data generator.

Public surface: :func:`run_training` (what ``tenantry train`` calls), :func:`generate`
(``tenantry data generate``), :func:`import_file` (``tenantry data import``), the training
spec (:class:`TrainingSpec`, :func:`load_spec`, :func:`default_spec`), their configuration
and report types.
"""

from __future__ import annotations

from training.errors import DataExists, DataNotFound, InvalidTrainingInput
from training.features import FEATURE_NAMES
from training.generate import GenerateSummary, GeneratorConfig, default_spec, generate
from training.importer import ImportReport, import_file
from training.job import run_training
from training.report import TenantFailure, TrainingReport
from training.settings import TrainingSettings
from training.spec import SpecError, TrainingSpec, load_spec
from training.table import FeatureTable

__all__ = [
    "FEATURE_NAMES", "DataExists", "DataNotFound", "FeatureTable", "GenerateSummary",
    "GeneratorConfig", "ImportReport", "InvalidTrainingInput", "SpecError", "TenantFailure",
    "TrainingReport", "TrainingSettings", "TrainingSpec", "default_spec", "generate",
    "import_file", "load_spec", "run_training",
]
