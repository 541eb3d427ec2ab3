"""Training settings come from one place: the environment mapping given to from_env."""

from __future__ import annotations

import pytest

from training.errors import InvalidTrainingInput
from training.settings import TrainingSettings


def test_defaults() -> None:
    s = TrainingSettings.from_env({})
    assert (s.window_days, s.n_estimators, s.max_depth, s.num_cpus) == (7, 50, 5, None)


def test_env_values_are_parsed() -> None:
    s = TrainingSettings.from_env({
        "TENANTRY_TRAIN_WINDOW_DAYS": "3", "TENANTRY_TRAIN_AUC_TOLERANCE": "0.05",
        "TENANTRY_TRAIN_PROGRESS": "false", "TENANTRY_RAY_NUM_CPUS": "2",
        "TENANTRY_RAY_ADDRESS": "127.0.0.1:6379", "TENANTRY_TRAIN_HALT_MARKER": "/tmp/m",
        "UNRELATED": "x"})
    assert (s.window_days, s.auc_tolerance, s.progress) == (3, 0.05, False)
    assert (s.num_cpus, s.ray_address, s.halt_marker) == (2, "127.0.0.1:6379", "/tmp/m")


def test_overrides_skip_none() -> None:
    s = TrainingSettings().with_overrides(window_days=4, num_cpus=None)
    assert (s.window_days, s.num_cpus) == (4, None)


@pytest.mark.parametrize("env", [
    {"TENANTRY_TRAIN_WINDOW_DAYS": "seven"},
    {"TENANTRY_TRAIN_WINDOW_DAYS": "1"},
    {"TENANTRY_TRAIN_PROGRESS": "maybe"},
    {"TENANTRY_RAY_NUM_CPUS": "0"},
])
def test_bad_values_are_user_errors(env: dict[str, str]) -> None:
    with pytest.raises(InvalidTrainingInput):
        TrainingSettings.from_env(env)


def test_task_resources_parse() -> None:
    s = TrainingSettings.from_env({"TENANTRY_TRAIN_TASK_RESOURCES": "training=1, spot=0.5"})
    assert s.resources() == {"training": 1.0, "spot": 0.5}
    assert TrainingSettings().resources() == {}


@pytest.mark.parametrize("raw", ["training", "training=", "=1", "training=0", "training=x"])
def test_bad_task_resources_are_user_errors(raw: str) -> None:
    with pytest.raises(InvalidTrainingInput, match="task_resources"):
        TrainingSettings(task_resources=raw)
