"""The promotion gate policy."""

from __future__ import annotations

from training.gate import Decision, decide
from training.model import HoldoutScore


def test_no_production_promotes() -> None:
    result = decide(HoldoutScore(0.6, 0.5), None)
    assert result.decision is Decision.PRODUCTION
    assert "no production" in result.reason


def test_unscorable_production_promotes_with_cause() -> None:
    result = decide(HoldoutScore(0.6, 0.5), None, production_error="ChecksumMismatch")
    assert result.decision is Decision.PRODUCTION
    assert "ChecksumMismatch" in result.reason


def test_better_or_slightly_worse_promotes() -> None:
    assert decide(HoldoutScore(0.80, 0.4), HoldoutScore(0.75, 0.4)).decision is \
        Decision.PRODUCTION
    assert decide(HoldoutScore(0.745, 0.4), HoldoutScore(0.75, 0.4),
                  auc_tolerance=0.01).decision is Decision.PRODUCTION


def test_worse_than_tolerance_goes_to_shadow() -> None:
    result = decide(HoldoutScore(0.70, 0.4), HoldoutScore(0.75, 0.4), auc_tolerance=0.01)
    assert result.decision is Decision.SHADOW
    assert "-0.05" in result.reason
    assert decide(HoldoutScore(0.70, 0.4), HoldoutScore(0.75, 0.4),
                  auc_tolerance=0.1).decision is Decision.PRODUCTION
