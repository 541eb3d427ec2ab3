"""The promotion gate: does a new model replace production, or wait as its shadow?

Policy only (no I/O): both models have been scored on the same holdout (the run's own day,
which neither model trained on) before :func:`decide` is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from training.model import HoldoutScore

__all__ = ["Decision", "GateResult", "decide"]


class Decision(str, Enum):
    """Which alias the new version gets."""

    PRODUCTION = "production"
    SHADOW = "shadow"


@dataclass(frozen=True)
class GateResult:
    """The gate's decision and a one-line reason recorded with the alias move."""

    decision: Decision
    reason: str


def decide(new: HoldoutScore, production: HoldoutScore | None, *,
           production_error: str | None = None, auc_tolerance: float = 0.01) -> GateResult:
    """Promote unless the new model's AUC is worse than production's by more than the tolerance.

    Args:
        new: the new model's holdout score.
        production: the production model's score on the same holdout (None: no production).
        production_error: why production could not be scored, if it could not (e.g. its
            features are not in the data any more, or its artifact fails its checksum).
        auc_tolerance: how much lower an AUC is still "not worse".

    Returns:
        A :class:`GateResult`.
    """
    if production is None:
        why = f"production unscorable ({production_error})" if production_error else \
            "no production model"
        return GateResult(Decision.PRODUCTION, why)
    delta = new.auc - production.auc
    text = f"holdout auc {new.auc:.4f} vs production {production.auc:.4f} ({delta:+.4f})"
    if delta >= -auc_tolerance:
        return GateResult(Decision.PRODUCTION, f"{text} within tolerance {auc_tolerance}")
    return GateResult(Decision.SHADOW, f"{text} worse than tolerance {auc_tolerance}")
