"""Model quality monitoring: a sampled prediction log and a nightly drift job.

Model hosts write a sample of production requests to ``<registry>/predictions``
(:class:`PredictionLog`, an after-predict hook of each host, off the response path);
``tenantry monitor run`` (:func:`run_monitoring`, on Ray Data) compares each tenant's day
with the reference profile of the version that served it (made at training time, stored in
the registry's ``profiles`` table) and writes one row per tenant into
``<registry>/monitoring``, which ``tenantry monitor report`` and the console read.

Importing this package starts nothing (a model host imports :mod:`engine.monitor.log`).
"""

from __future__ import annotations

from engine.monitor.judge import Status, TenantFigures, Verdict, Volume, judge
from engine.monitor.log import PredictionLog, attach_prediction_log
from engine.monitor.psi import Drift, drift, noise_bound, psi
from engine.monitor.report import MonitorRunReport, TenantReport, tenant_report
from engine.monitor.settings import MonitorSettings
from engine.monitor.tables import MONITORING, PREDICTIONS, DeltaAppender

__all__ = [
    "MONITORING", "PREDICTIONS", "DeltaAppender", "Drift", "MonitorRunReport",
    "MonitorSettings", "PredictionLog", "Status", "TenantFigures", "TenantReport", "Verdict",
    "Volume", "attach_prediction_log", "drift", "judge", "noise_bound", "psi",
    "run_monitoring", "tenant_report",
]


def __getattr__(name: str) -> object:
    if name == "run_monitoring":  # the job module pulls in the training job's Ray helpers
        from engine.monitor.job import run_monitoring

        return run_monitoring
    raise AttributeError(name)
