"""``tenantry serve`` is closed by default: no non-loopback address without keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cli import main


def test_serve_on_all_addresses_without_keys_is_refused_before_anything_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", "--host", "0.0.0.0", "--registry", str(tmp_path / "nothing")])
    err = capsys.readouterr().err
    assert code != 0
    assert "without API keys" in err and "--allow-anonymous" in err
    assert "Traceback" not in err
    assert not (tmp_path / "nothing").exists()
