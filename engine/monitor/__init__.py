"""Model quality monitoring: a sampled prediction log and a nightly drift job.

Model hosts write a sample of production requests to ``<registry>/predictions``
(:class:`PredictionLog`, an after-predict hook of each host, off the response path).

Importing this package starts nothing (a model host imports :mod:`engine.monitor.log`).
"""

from __future__ import annotations

from engine.monitor.log import PredictionLog, attach_prediction_log
from engine.monitor.tables import MONITORING, PREDICTIONS, DeltaAppender

__all__ = ["MONITORING", "PREDICTIONS", "DeltaAppender", "PredictionLog",
           "attach_prediction_log"]
