"""Per-model footprint of a tiny model trained on the fly, from a file and the registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli import main
from engine.loadtest.footprint import measure_footprint, registry_artifact
from registry.errors import ModelLoadError
from tests.conftest import train_tiny


def _tiny_model(rounds: int = 5, width: int = 4) -> bytes:
    return train_tiny(0, features=width, rounds=rounds)


def test_measure_footprint_of_tiny_model() -> None:
    data = _tiny_model()
    fp = measure_footprint(data, "t1", version=3, copies=5, repeats=20)
    assert fp.artifact_bytes == len(data) and fp.trees == 5 and fp.features == 4
    assert fp.version == 3 and fp.load_ms > 0
    assert fp.predict_us_1row > 0 and fp.predict_us_100rows > 0
    assert fp.loaded_bytes is None or fp.loaded_bytes >= 0


def test_not_a_model_is_a_load_error() -> None:
    with pytest.raises(ModelLoadError):
        measure_footprint(b"not a model", "t1", copies=1, repeats=1)


def test_footprint_cli_from_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model.ubj"
    path.write_bytes(_tiny_model())
    code = main(["loadtest", "--footprint", "t1", "--artifact", str(path), "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["artifact_bytes"] == path.stat().st_size and doc["trees"] == 5


def test_footprint_from_registry(tmp_path: Path) -> None:
    from registry import AliasMove, NewVersion, Registry

    reg = Registry.create(str(tmp_path / "reg"), num_shards=2)
    data = _tiny_model(rounds=3, width=4)
    staged = reg.stage_artifact("acme", data, "run-1")
    reg.publish("run-1", [NewVersion(staged, ("a", "b", "c", "d"), {"auc": 0.9})],
                [AliasMove("acme", "production", staged.version)])
    got, version, width = registry_artifact(str(tmp_path / "reg"), "acme")
    assert got == data and version == staged.version and width == 4


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", "--rates", "10"]) != 0
    assert main(["loadtest", "--url", "https://x:1"]) != 0
    assert main(["loadtest", "--url", "http://127.0.0.1:1", "--rates", "5,-1"]) != 0
    assert main(["loadtest", "--url", "http://127.0.0.1:1", "--rates", "5"]) != 0  # refused
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("tenantry: error:") for line in err)
    assert "Traceback" not in "".join(err)
