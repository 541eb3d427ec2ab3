"""cluster.yaml and serve_config.yaml validate against Ray's own schemas, and agree.

The cluster config is checked the way ``ray up`` checks it: Ray's autoscaler JSON schema
(``ray/autoscaler/ray-schema.json``), then Ray's own defaults-filling and semantic checks.
The Serve config is parsed by ``ray.serve.schema.ServeDeploySchema`` as ``serve deploy``
does. No Ray is started.
"""

from __future__ import annotations

import ast
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml

from engine.settings import ServeSettings
from training.cluster import NICENESS_ENV, WORKER_NICENESS

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> dict[str, Any]:
    with open(ROOT / name) as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return _load("cluster.yaml")


@pytest.fixture(scope="module")
def serve_config() -> Any:
    from ray.serve.schema import ServeDeploySchema

    return ServeDeploySchema.model_validate(_load("serve_config.yaml"))


def test_cluster_yaml_matches_the_autoscaler_schema(cluster: dict[str, Any]) -> None:
    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    jsonschema.validate(cluster, json.loads(schema_path.read_text()))


def test_the_schemas_do_reject_mistakes(cluster: dict[str, Any]) -> None:
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    typo = {**cluster, "max_worker": 3}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(typo, schema)
    bad_node = json.loads(json.dumps(cluster))
    bad_node["available_node_types"]["serving"]["resources"]["serving"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad_node, schema)
    bad_app = _load("serve_config.yaml")
    bad_app["applications"][0]["import_path"] = "engine.serving:app:build_app"
    with pytest.raises(ValidationError):
        ServeDeploySchema.model_validate(bad_app)


def test_cluster_yaml_passes_ray_up_preparation(cluster: dict[str, Any]) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(json.loads(json.dumps(cluster)))  # what `ray up` runs
    validate_config(prepared)
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_node_types_carry_the_placement_resources(cluster: dict[str, Any]) -> None:
    types = cluster["available_node_types"]
    assert set(types) == {"head", "serving", "training"}
    assert not types["head"]["resources"]  # no serving: the ingresses run on serving nodes
    assert types["serving"]["resources"].get("serving", 0) >= 1
    assert types["training"]["resources"].get("training", 0) >= 1
    assert types["serving"]["min_workers"] >= 1  # serving is always up
    assert types["training"]["min_workers"] == 0  # training nodes come and go with the job
    assert sum(t.get("min_workers", 0) for t in types.values()) <= cluster["max_workers"]


def test_cluster_installs_tenantry_and_deploys_serving(cluster: dict[str, Any]) -> None:
    assert cluster["file_mounts"]["~/tenantry"] == "."
    setup = " ".join(cluster["setup_commands"])
    assert "pip install" in setup and "~/tenantry" in setup
    head = " ".join(cluster["head_start_ray_commands"])
    assert "ray start --head" in head and "serve deploy ~/tenantry/serve_config.yaml" in head
    workers = " ".join(cluster["worker_start_ray_commands"])
    assert "ray start --address=$RAY_HEAD_IP:6379" in workers
    run_options = " ".join(cluster["docker"]["run_options"])
    assert "TENANTRY_REGISTRY=s3://" in run_options


def test_every_node_starts_workers_at_tenantrys_niceness(cluster: dict[str, Any]) -> None:
    # Model hosts and HAProxy are Ray workers: at Ray's default niceness (15) the shadow
    # worker's idle priority is barely below theirs.
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [c for c in cluster[key] if "ray start" in c]
        assert f"{NICENESS_ENV}={WORKER_NICENESS} ray start" in " ".join(start.split()), key


def test_closed_by_default_keys_on_and_dashboard_on_loopback(cluster: dict[str, Any],
                                                             serve_config: Any) -> None:
    (app,) = serve_config.applications
    settings = ServeSettings.from_env({}, **app.args)
    assert settings.api_keys_file and not settings.allow_anonymous
    assert settings.exposure_problem() == ""
    assert cluster["file_mounts"][settings.api_keys_file] == "./tenantry-keys.json"
    head = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head


def test_traffic_enters_through_the_ingress_not_the_serve_proxy(serve_config: Any) -> None:
    (app,) = serve_config.applications
    assert serve_config.proxy_location == "Disabled"
    assert not app.deployments  # one deployment (ModelHost); no Router any more
    assert (app.args["host"], app.args["port"]) == ("0.0.0.0", 8080)
    readme = (ROOT / "README.md").read_text()
    assert "8080" in readme and "HAProxy" in readme


def test_serve_config_matches_the_serve_schema(serve_config: Any) -> None:
    (app,) = serve_config.applications
    assert app.import_path == "engine.serving.app:build_app"
    assert app.args["registry"].startswith("s3://")
    assert (app.args["replicas"], app.args["cache_mb"], app.args["port"]) == (2, 256, 8080)


def test_serve_args_are_serving_settings(serve_config: Any, cluster: dict[str, Any]) -> None:
    (app,) = serve_config.applications
    known = {f.name for f in fields(ServeSettings)} | {"app_name"}
    assert set(app.args) <= known, set(app.args) - known
    settings = ServeSettings.from_env({}, **app.args)
    for name in settings.resources():  # every resource a replica asks for exists somewhere
        assert any(name in t["resources"] for t in cluster["available_node_types"].values())


def test_import_path_names_a_real_factory() -> None:
    source = ROOT / "engine" / "serving" / "app.py"
    if not source.exists():
        pytest.skip("engine/serving/app.py not written yet")
    tree = ast.parse(source.read_text())
    assert any(isinstance(node, ast.FunctionDef) and node.name == "build_app"
               for node in tree.body)
