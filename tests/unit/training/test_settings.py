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


# One reader (registry.settings.read_env, pydantic-settings) serves every settings class:
# each keeps its variable names; flags win over the environment, which wins over defaults.

def test_serve_settings_flag_over_env_over_default() -> None:
    from engine.settings import ServeSettings

    env = {"TENANTRY_PORT": "9000", "TENANTRY_REPLICAS": "3", "TENANTRY_ACCESS_LOG": "true"}
    s = ServeSettings.from_env(env, replicas=5, cache_mb=None)
    assert (s.port, s.replicas, s.access_log, s.cache_mb) == (9000, 5, True, 64.0)


def test_ray_address_falls_back_to_ray_s_own_variable() -> None:
    from engine.settings import ServeSettings

    assert ServeSettings.from_env({"RAY_ADDRESS": "h:1"}).ray_address == "h:1"
    both = {"RAY_ADDRESS": "h:1", "TENANTRY_RAY_ADDRESS": "t:2"}
    assert ServeSettings.from_env(both).ray_address == "t:2"
    assert TrainingSettings.from_env(both).ray_address == "t:2"


@pytest.mark.parametrize("env", [{"TENANTRY_PORT": "eighty"}, {"TENANTRY_ACCESS_LOG": "maybe"},
                                 {"TENANTRY_CACHE_MB": "lots"}])
def test_bad_serve_values_are_one_line_user_errors(env: dict[str, str]) -> None:
    from engine.settings import ServeSettings
    from registry.errors import ValidationError

    (key, raw), = env.items()
    with pytest.raises(ValidationError, match=f"^{key}='{raw}' is not a valid"):
        ServeSettings.from_env(env)


def test_empty_variables_count_as_unset() -> None:
    from engine.console.settings import ConsoleSettings
    from registry.settings import DEFAULT_ROOT, RegistrySettings

    assert RegistrySettings.from_env({"TENANTRY_REGISTRY": ""}).root == DEFAULT_ROOT
    assert ConsoleSettings.from_env({"TENANTRY_CONSOLE_PORT": ""}).port == 8090
    assert TrainingSettings.from_env({"TENANTRY_TRAIN_WINDOW_DAYS": ""}).window_days == 7


def test_console_reads_its_own_names_and_the_registry() -> None:
    from engine.console.settings import ConsoleSettings

    s = ConsoleSettings.from_env({"TENANTRY_REGISTRY": "/r", "TENANTRY_CONSOLE_PORT": "1",
                                  "TENANTRY_PORT": "2"}, host="0.0.0.0")
    assert (s.registry, s.port, s.host) == ("/r", 1, "0.0.0.0")


def test_the_command_defaults_its_registry_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.cli import build_parser

    monkeypatch.setenv("TENANTRY_REGISTRY", "/from/env")
    assert build_parser().parse_args(["registry", "list"]).registry == "/from/env"
    parser = build_parser({"TENANTRY_REGISTRY": "/given"})
    assert parser.parse_args(["registry", "list"]).registry == "/given"
    assert parser.parse_args(["registry", "list", "--registry", "/flag"]).registry == "/flag"
