"""training.cluster: how tenantry starts Ray."""

from __future__ import annotations

import pytest

from training.cluster import NICENESS_ENV, WORKER_NICENESS, worker_niceness_config


def test_a_ray_tenantry_starts_runs_its_workers_at_normal_priority(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NICENESS_ENV, raising=False)
    assert WORKER_NICENESS == 0
    assert worker_niceness_config() == {"worker_niceness": 0}


def test_a_niceness_the_user_set_is_left_to_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NICENESS_ENV, "5")
    assert worker_niceness_config() == {}  # Ray reads RAY_worker_niceness itself
