"""What a run records per trained tenant (registry version) and about itself (report).

The registry row of a version carries the features the model was trained on, their types,
the objective and (multiclass) the class count; ``params`` adds the categories of each
categorical feature, the features left out for this tenant, the window and the gate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from registry import NewVersion
from training.bucket import TenantOutcome
from training.resolve import RunPlan

__all__ = ["new_version", "run_details"]


def new_version(o: TenantOutcome, plan: RunPlan, metrics: Mapping[str, float], date: str,
                dates: tuple[str, ...], gate: str) -> NewVersion:
    """The registry version of one trained tenant.

    Args:
        o: the tenant's outcome (trained and staged).
        plan: the run's plan.
        metrics: holdout metrics (with the production model's, when scored).
        date: the run's date.
        dates: the window.
        gate: the alias the gate chose.

    Returns:
        The :class:`NewVersion` to publish.
    """
    assert o.artifact is not None
    categories = dict(o.categories)
    params: dict[str, Any] = {**dict(o.params), "window": list(dates), "gate": gate,
                              "gate_metric": plan.gate.metric,
                              "holdout": plan.data.holdout.describe()}
    if categories:
        params["categories"] = {k: list(v) for k, v in categories.items()}
    if o.dropped:
        params["dropped_features"] = list(o.dropped)
    types = tuple("categorical" if n in categories else "float" for n in o.feature_names)
    return NewVersion(o.artifact, o.feature_names, metrics, date, params,
                      objective=plan.model.objective,
                      num_class=plan.model.num_class or None, feature_types=types)


def run_details(plan: RunPlan, outcomes: Iterable[TenantOutcome]) -> dict[str, Any]:
    """The spec-derived facts a report adds: objective, gate, layout, features, drops.

    Args:
        plan: the run's plan.
        outcomes: every tenant's outcome.

    Returns:
        JSON-ready details (``dropped_features``: feature -> tenants trained without it).
    """
    dropped = Counter(name for o in outcomes for name in o.dropped)
    details: dict[str, Any] = {
        "objective": plan.objective, "xgb_objective": plan.model.objective,
        "gate_metric": plan.gate.metric, "holdout": plan.data.holdout.describe(),
        "layout": plan.source.layout.value, "table": plan.source.path,
        "features": list(plan.data.feature_names),
        "categorical": sorted(plan.data.categorical),
        "dropped_features": dict(sorted(dropped.items())),
    }
    if plan.model.num_class:
        details["num_class"] = plan.model.num_class
    return details
