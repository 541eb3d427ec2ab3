"""``tenantry loadtest`` user mistakes are one clear line before any load is sent, and a
capacity no stage could break is reported as a lower bound. No Ray: the server is the
fake server (``engine.loadtest.fakeserver``) in a subprocess on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.cli import main
from engine.loadtest.capacity import is_lower_bound, recommend, target_curve
from engine.loadtest.report import render_markdown


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tenantry: error:"), captured.err
    assert captured.out == ""
    return lines[0]


@pytest.fixture()
def listening() -> Iterator[str]:
    """A loopback port that accepts connections (and never answers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("make", [
    lambda tmp: tmp,  # a directory that exists, but is no registry
    lambda tmp: tmp / "no-such-registry",
])
def test_registry_that_is_not_one_is_an_error(tmp_path: Path, listening: str, make: object,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    root = make(tmp_path)  # type: ignore[operator]  # a parametrized lambda
    code = main(["loadtest", "--url", listening, "--registry", str(root), "--rates", "5",
                 "--out", str(tmp_path / "out"), "--no-progress"])
    assert code != 0
    line = one_error_line(capsys)
    assert f"--registry {root}: no tenantry registry there" in line
    assert "--tenant-source synthetic" in line
    assert not (tmp_path / "out").exists()  # refused before anything else


def test_rates_that_are_not_numbers_name_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", "--url", "http://127.0.0.1:1", "--rates", "abc"]) != 0
    line = one_error_line(capsys)
    assert "--rates:" in line and "'abc'" in line and "could not convert" not in line
    assert main(["loadtest", "--url", "http://127.0.0.1:1", "--rates", "5,-1"]) != 0
    assert "--rates:" in one_error_line(capsys)


def test_unwritable_out_is_refused_before_the_test(tmp_path: Path, listening: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = blocker / "report"
    code = main(["loadtest", "--url", listening, "--tenant-source", "synthetic",
                 "--rates", "5", "--duration", "30", "--out", str(out), "--no-progress"])
    assert code != 0
    line = one_error_line(capsys)
    assert f"--out {out}: cannot write the report there" in line


def test_lower_bound_when_no_stage_failed() -> None:
    curve = target_curve(50, 1.1)
    passed = [SimpleNamespace(passed=True), SimpleNamespace(passed=True)]
    failed = [SimpleNamespace(passed=True), SimpleNamespace(passed=False)]
    assert is_lower_bound(passed) and not is_lower_bound(failed)  # type: ignore[arg-type]
    assert not is_lower_bound([])
    bound = recommend(200.0, 2, 1000.0, 50, curve, 0.8, 1000.0, lower_bound=True)
    assert bound.lower_bound and bound.replicas == 12
    assert any("at least 100.0 req/s per replica" in n and "upper bound" in n
               for n in bound.notes)
    exact = recommend(200.0, 2, 1000.0, 50, curve, 0.8, 1000.0)
    assert not exact.lower_bound
    assert not recommend(None, 1, 10.0, 50, curve, 0.8, 1000.0, lower_bound=True).lower_bound


@pytest.fixture()
def fake_server() -> Iterator[str]:
    """Capacity 1,000 req/s (1 ms per request): far above what the test offers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.loadtest.fakeserver", "--host", "127.0.0.1",
         "--port", "0", "--service-ms", "1", "--cache-models", "20"],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("listening on 127.0.0.1:"), line
    yield "http://" + line.split()[-1]
    proc.terminate()
    proc.wait(timeout=10)


def test_cli_reports_a_capacity_nothing_broke_as_a_lower_bound(
        fake_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    code = main(["loadtest", "--url", fake_server, "--tenant-source", "synthetic",
                 "--tenants", "20", "--rates", "20,40", "--duration", "1", "--ramp", "0",
                 "--slo-p99-ms", "2000", "--target-rps", "400", "--out", str(out), "--json",
                 "--no-progress", "--replicas", "1"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    if not all(s["passed"] for s in doc["stages"]):
        pytest.skip("machine overloaded: a 40 req/s stage failed a 2 s p99")
    assert doc["lower_bound"] is True and doc["recommendation"]["lower_bound"] is True
    report = (out / "report.md").read_text()
    assert "at least" in report and "the replica count is an upper bound" in report
    assert f"at most {doc['recommendation']['replicas']} replicas" in report


def test_markdown_without_lower_bound_says_nothing_of_bounds() -> None:
    rec = recommend(99.5, 1, 500.0, 100, target_curve(100, 1.1), 0.8, 1000.0).to_dict()
    doc = {"recommendation": rec, "url": "http://x", "tenants": 100, "zipf_s": 1.1,
           "workers": 1, "hold_s": 1.0, "slo_p99_ms": 50.0, "max_rps_within_slo": 99.5,
           "lower_bound": False, "stages": [], "notes": [], "report_files": []}
    text = render_markdown(doc)
    assert "at least" not in text and "upper bound" not in text
    assert f"{rec['replicas']} replicas" in text
