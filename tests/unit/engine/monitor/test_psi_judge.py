"""PSI, its sampling-noise bound, per-variable drift and the flagging rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.monitor.judge import Status, TenantFigures, Volume, judge
from engine.monitor.psi import Drift, drift, noise_bound, psi
from engine.monitor.settings import MonitorSettings
from registry.errors import ValidationError
from training.profile import distribution

S = MonitorSettings()


def test_psi_known_values() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    expected = (0.7 - 0.5) * math.log(0.7 / 0.5) + (0.3 - 0.5) * math.log(0.3 / 0.5)
    assert psi([0.5, 0.5], [0.7, 0.3]) == pytest.approx(expected)
    assert psi([0.5, 0.5], [0.7, 0.3]) == pytest.approx(psi([0.7, 0.3], [0.5, 0.5]))
    assert math.isfinite(psi([1.0, 0.0], [0.0, 1.0]))  # empty bins are floored, not inf
    with pytest.raises(ValueError):
        psi([0.5, 0.5], [1.0])


def test_noise_bound_shrinks_with_rows() -> None:
    assert noise_bound(10, 100, 5000) == pytest.approx(27.88 * (1 / 100 + 1 / 5000), rel=0.01)
    assert noise_bound(10, 10_000, 10_000) < 0.01
    assert noise_bound(1, 10, 10) == 0.0 and noise_bound(10, 0, 10) == math.inf


def test_same_distribution_is_stable_shift_is_not() -> None:
    rng = np.random.default_rng(0)
    ref = distribution("x", rng.normal(size=5000))
    same = drift(rng.normal(size=500), ref)
    assert same.psi is not None and same.psi < 0.1 and same.psi < same.bound
    shifted = drift(rng.normal(loc=3.0, size=500), ref)
    assert shifted.psi is not None and shifted.psi > 2.0 > shifted.bound


def test_missing_rate_is_compared_apart() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=5000)
    values[:250] = np.nan
    ref = distribution("x", values)
    served = rng.normal(size=400)
    served[:200] = np.nan
    d = drift(served, ref)
    assert d.reference_missing_rate == 0.05 and d.missing_rate == 0.5
    assert d.psi is not None and d.psi < 0.2  # the values present still look the same


def test_nothing_present_has_no_psi() -> None:
    ref = distribution("x", np.arange(100.0))
    assert drift(np.full(10, np.nan), ref).psi is None
    assert drift(np.arange(5.0), distribution("y", np.full(10, np.nan))).psi is None


def _fig(*features: Drift, score: Drift | None = None) -> TenantFigures:
    return TenantFigures("acme", 3, Status.JUDGED, 500, features, score)


def _d(name: str, value: float | None, bound: float = 0.05, missing: float = 0.0,
       ref_missing: float = 0.0) -> Drift:
    return Drift(name, value, bound, missing, ref_missing, 500)


def test_judge_flags_with_reasons() -> None:
    calm = judge(_fig(_d("a", 0.05), score=_d("score", 0.01)), Volume(500, 480.0), S)
    assert not calm.flagged and calm.reasons == ()
    v = judge(_fig(_d("a", 1.5), _d("b", 0.0, missing=0.4, ref_missing=0.05),
                   score=_d("score", 0.3)), Volume(500, 480.0), S)
    assert v.flagged
    assert v.reasons[0].startswith("score: PSI 0.30")
    assert any(r.startswith("feature a: PSI 1.50") for r in v.reasons)
    assert any(r.startswith("feature b: missing rate 0.40 vs 0.05") for r in v.reasons)


def test_noise_bound_can_hold_a_flag_back() -> None:
    noisy = _fig(_d("a", 0.25, bound=0.3))
    assert not judge(noisy, Volume(120, None), S).flagged
    assert judge(noisy, Volume(120, None), MonitorSettings(noise_aware=False)).flagged


@pytest.mark.parametrize(("rows", "baseline", "flagged"), [
    (500, 150.0, True), (500, 200.0, False), (50, 200.0, True), (80, 200.0, False),
    (10, 3.0, False),  # both sides below min_rows: too small to judge
    (500, None, False),  # no baseline yet
    (0, 300.0, True),  # a tenant that went silent
])
def test_volume(rows: int, baseline: float | None, flagged: bool) -> None:
    fig = TenantFigures("acme", None, Status.TOO_FEW_ROWS, rows)
    verdict = judge(fig, Volume(rows, baseline), S)
    assert verdict.flagged is flagged
    if flagged:
        assert verdict.reasons[0].startswith("volume:")


def test_too_few_rows_is_not_judged_on_drift() -> None:
    fig = TenantFigures("acme", 1, Status.TOO_FEW_ROWS, 20, (_d("a", 5.0),))
    assert not judge(fig, Volume(20, None), S).flagged


def test_settings_from_env() -> None:
    s = MonitorSettings.from_env({"TENANTRY_MONITOR_MIN_ROWS": "50",
                                  "TENANTRY_MONITOR_PSI_THRESHOLD": "0.3",
                                  "TENANTRY_RAY_ADDRESS": "ray://x:1"})
    assert (s.min_rows, s.psi_threshold, s.ray_address) == (50, 0.3, "ray://x:1")
    with pytest.raises(ValidationError):
        MonitorSettings.from_env({"TENANTRY_MONITOR_MIN_ROWS": "many"})
    with pytest.raises(ValidationError):
        MonitorSettings(volume_factor=1.0)
