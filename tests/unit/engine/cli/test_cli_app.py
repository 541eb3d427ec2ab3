"""engine.cli: handlers return a Reply, main prints it (text or one JSON document) and maps
errors to one stderr line and an exit code."""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path

import pytest

from engine.cli import Reply, main
from engine.cli.app import _run


def _never() -> str:
    raise AssertionError("the text is built only without --json")


def test_a_reply_is_printed_as_one_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(json=True)
    assert _run(lambda a, env: Reply({"n": 1, "env": env["X"]}, _never, 3), args,
                {"X": "y"}) == 3
    assert json.loads(capsys.readouterr().out) == {"n": 1, "env": "y"}


def test_a_reply_is_printed_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(lambda a, env: Reply({}, lambda: "hello\n\n"), argparse.Namespace(), {}) == 0
    assert capsys.readouterr().out == "hello\n"


def test_a_handler_may_answer_an_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(lambda a, env: 7, argparse.Namespace(json=True), {}) == 7
    assert capsys.readouterr().out == ""


def test_a_missing_registry_is_a_user_error(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "list", "--registry", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tenantry: error: ") and err.count("\n") == 1


def test_an_unreachable_server_is_an_error_of_its_own(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = main(["loadtest", "--url", f"http://127.0.0.1:{port}", "--tenant-source",
                 "synthetic", "--out", str(tmp_path), "--no-progress"])
    assert code == 1
    assert "cannot connect" in capsys.readouterr().err


def test_the_registry_defaults_from_the_environment_main_read(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TENANTRY_REGISTRY", str(tmp_path / "reg"))
    assert main(["registry", "init", "--shards", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"root": str(tmp_path / "reg"),
                                                   "num_shards": 2}
