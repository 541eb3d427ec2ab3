"""The promotion gate: does a new model replace production, or wait as its shadow?

Policy only (no I/O): both models have been scored on the same holdout (which neither model
trained on) before :func:`decide` is called. The metric is the spec's gate metric: AUC by
default (higher is better), or rmse / mae / logloss / mlogloss / merror (lower is better).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from training.metrics import HIGHER_IS_BETTER
from training.model import HoldoutScore

__all__ = ["Decision", "GateResult", "GateRule", "decide"]


class Decision(str, Enum):
    """Which alias the new version gets."""

    PRODUCTION = "production"
    SHADOW = "shadow"


@dataclass(frozen=True)
class GateResult:
    """The gate's decision and a one-line reason recorded with the alias move."""

    decision: Decision
    reason: str


@dataclass(frozen=True)
class GateRule:
    """Which holdout metric decides, and how much worse the new model may be."""

    metric: str = "auc"
    tolerance: float = 0.01
    relative: bool = False
    """The tolerance is a fraction of production's value rather than an absolute amount."""

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger value of the metric is better (AUC) or worse (losses, errors)."""
        return self.metric in HIGHER_IS_BETTER


def decide(new: HoldoutScore, production: HoldoutScore | None, *,
           production_error: str | None = None, auc_tolerance: float = 0.01,
           rule: GateRule | None = None) -> GateResult:
    """Promote unless the new model is worse than production by more than the tolerance.

    Args:
        new: the new model's holdout score.
        production: the production model's score on the same holdout (None: no production).
        production_error: why production could not be scored, if it could not (e.g. its
            features are not in the data any more, or its artifact fails its checksum).
        auc_tolerance: the tolerance when no ``rule`` is given (AUC, absolute).
        rule: the gate's metric and tolerance (default: AUC with ``auc_tolerance``).

    Returns:
        A :class:`GateResult`.
    """
    rule = rule or GateRule("auc", auc_tolerance)
    new_value = new.value(rule.metric)
    prod_value = production.value(rule.metric) if production is not None else None
    if production is not None and prod_value is None:
        production_error = production_error or f"production has no {rule.metric}"
    if production is None or prod_value is None or new_value is None:
        why = f"production unscorable ({production_error})" if production_error else \
            "no production model"
        return GateResult(Decision.PRODUCTION, why)
    delta = new_value - prod_value
    allowed = rule.tolerance * abs(prod_value) if rule.relative else rule.tolerance
    worse_by = -delta if rule.higher_is_better else delta
    tol_text = f"{rule.tolerance:g} x production" if rule.relative else f"{rule.tolerance}"
    text = (f"holdout {rule.metric} {new_value:.4f} vs production {prod_value:.4f} "
            f"({delta:+.4f})")
    if worse_by <= allowed:
        return GateResult(Decision.PRODUCTION, f"{text} within tolerance {tol_text}")
    return GateResult(Decision.SHADOW, f"{text} worse than tolerance {tol_text}")
