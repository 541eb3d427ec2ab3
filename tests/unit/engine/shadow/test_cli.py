"""`tenantry shadow set | clear | report` through the CLI entry point."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.cli import main


def _json(capsys: Any, argv: list[str]) -> Any:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_set_report_clear(fresh: Any, h: Any, capsys: Any) -> None:
    root = fresh.root
    doc = _json(capsys, ["shadow", "set", h.TENANT, "--fraction", "0.5", "--until",
                         "2099-01-01T00:00:00Z", "--registry", root, "--json"])
    assert doc["fraction"] == 0.5 and doc["version"] is None and doc["resolved_version"] == 2
    doc = _json(capsys, ["shadow", "report", h.TENANT, "--registry", root, "--json"])
    for key in ("tenant_id", "production_version", "shadow_version", "pairs", "agreement",
                "mean_abs_diff", "max_abs_diff", "dropped"):
        assert key in doc
    assert doc["config"]["fraction"] == 0.5 and doc["pairs"] == 0
    assert _json(capsys, ["shadow", "clear", h.TENANT, "--registry", root, "--json"]) == \
        {"tenant_id": h.TENANT, "cleared": True}
    assert main(["shadow", "report", h.TENANT, "--registry", root]) == 0
    assert "shadow report for acme" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["shadow", "set", "nobody", "--fraction", "0.5"],
    ["shadow", "set", "acme", "--fraction", "0.5", "--version", "9"],
    ["shadow", "set", "acme", "--fraction", "2"],
    ["shadow", "set", "acme", "--fraction", "0.5", "--until", "soon"],
    ["shadow", "set", "acme", "--fraction", "0.5", "--until", "2001-01-01T00:00:00Z"],
    ["shadow", "set", "acme", "--fraction", "0.5", "--version", "1"],  # its production
    ["shadow", "report", "nobody"],
])
def test_user_errors_are_one_line(fresh: Any, capsys: Any, argv: list[str]) -> None:
    assert main([*argv, "--registry", fresh.root]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tenantry: error:") and err.count("\n") == 1


def test_refusals_say_why_and_write_nothing(fresh: Any, capsys: Any) -> None:
    argv = ["shadow", "set", "acme", "--fraction", "0.5", "--registry", fresh.root]
    assert main([*argv, "--version", "1"]) == 2
    assert "production version" in capsys.readouterr().err
    assert main([*argv, "--until", "2001-01-01T00:00:00Z"]) == 2
    assert "already past" in capsys.readouterr().err
    assert main(["shadow", "report", "nobody", "--registry", fresh.root]) == 2
    assert "unknown tenant 'nobody'" in capsys.readouterr().err
    from engine.shadow import ConfigStore, ShadowTables

    assert ConfigStore(ShadowTables.for_registry(fresh.reg)).load() == {}
