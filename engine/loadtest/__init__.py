"""Capacity scale-testing: open-loop load, SLO search, hit-ratio curves, sizing, footprints.

``tenantry loadtest`` (see ``cli``) drives a server with an open-loop schedule from
several processes, reads its /metrics around each stage, finds the highest rate within
the latency SLO and recommends replicas and cache size for a target rate and tenant count.
"""

from __future__ import annotations

from engine.loadtest.capacity import Recommendation, max_within_slo, recommend, search
from engine.loadtest.footprint import Footprint, measure_footprint
from engine.loadtest.hitratio import HitRatioCurve, hit_ratio_curve, simulate_lru
from engine.loadtest.report import write_report
from engine.loadtest.runner import LoadTestConfig, LoadTestRun, run_loadtest
from engine.loadtest.schedule import Arrivals, Stage, send_offsets
from engine.loadtest.stats import StageResult
from engine.loadtest.workload import Workload, ZipfSampler

__all__ = [
    "Arrivals", "Footprint", "HitRatioCurve", "LoadTestConfig", "LoadTestRun", "Recommendation",
    "Stage", "StageResult", "Workload", "ZipfSampler", "hit_ratio_curve", "max_within_slo",
    "measure_footprint", "recommend", "run_loadtest", "search", "send_offsets", "simulate_lru",
    "write_report",
]
