"""User mistakes and pipes through the `tenantry registry` entry point."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from registry import AliasMove, Registry

from .conftest import new_version


def _publish(reg: Registry, tenant: str, data: bytes, alias: str) -> int:
    run_id = f"{tenant}-{alias}-{len(list(Path(reg.root).rglob('_claim.json')))}"
    staged = reg.stage_artifact(tenant, data, run_id)
    reg.publish(run_id, [new_version(staged)], [AliasMove(tenant, alias, staged.version)])
    return staged.version


def test_list_into_a_closed_pipe_exits_quietly(reg: Registry, model_bytes: bytes, capsys: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`tenantry registry list --json | head -1` once head has gone: no traceback."""
    for i in range(3):
        _publish(reg, f"t{i}", model_bytes, "production")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone: writes fail with EPIPE
    closed = io.TextIOWrapper(io.FileIO(write_end, "w"), write_through=False)
    monkeypatch.setattr(sys, "stdout", closed)
    try:
        assert main(["registry", "list", "--json", "--registry", reg.root]) == 1
        closed.write("x" * 10)
        closed.flush()  # stdout now points at /dev/null: the exit-time flush cannot fail
    finally:
        monkeypatch.undo()
        closed.close()
    assert "Traceback" not in capsys.readouterr().err


def test_promoting_the_shadow_version_clears_shadow(reg: Registry, model_bytes: bytes,
                                                    capsys: Any) -> None:
    _publish(reg, "acme", model_bytes, "production")  # v1
    shadow = _publish(reg, "acme", model_bytes, "shadow")  # v2
    _publish(reg, "acme", model_bytes, "shadow")  # v3 is shadow now
    assert main(["registry", "promote", "acme", "2", "--registry", reg.root, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shadow_cleared"] is False
    assert Registry.open(reg.root).get("acme").shadow.version == 3  # type: ignore[union-attr]
    assert main(["registry", "promote", "acme", "3", "--registry", reg.root, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == 3 and doc["shadow_cleared"] is True
    for view in (Registry.open(reg.root).get("acme"),
                 Registry.open(reg.root).new_snapshot().tenant_models("acme")):
        assert view.production is not None and view.production.version == 3
        assert view.shadow is None
    assert shadow == 2


def test_registry_commands_on_a_path_that_is_not_a_registry(tmp_path: Path, capsys: Any) -> None:
    missing = str(tmp_path / "nothing-here")
    assert main(["registry", "list", "--registry", missing]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tenantry: error: no tenantry registry at") and err.count("\n") == 1
    assert "tenantry registry init" in err and not Path(missing).exists()
