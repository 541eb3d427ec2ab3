"""The report writes JSON (contract keys), Markdown and PNGs that open."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from engine.loadtest.capacity import recommend, target_curve
from engine.loadtest.hitratio import hit_ratio_curve
from engine.loadtest.report import write_report
from engine.loadtest.runner import LoadTestConfig, LoadTestRun
from engine.loadtest.stats import StageResult


def test_report_files_and_contract_keys(tmp_path: Path) -> None:
    config = LoadTestConfig(url="http://127.0.0.1:1", tenants=("a", "b"), widths=(3, 3))
    stages = [StageResult(100.0, 99.5, 2.0, 8.0, 0.0, 0.9, p90_ms=5.0, passed=True),
              StageResult(200.0, 150.0, 80.0, 400.0, 0.01, None, p90_ms=300.0)]
    trace = np.array([0, 1, 0, 0, 1])
    run = LoadTestRun(config, stages, trace, hit_ratio_curve(trace.tolist()), 1.0, 1000.0, 3.0)
    rec = recommend(99.5, 1, 500.0, 100, target_curve(100, 1.1), 0.8, 1000.0)
    doc = write_report(run, rec, tmp_path / "out")
    on_disk = json.loads((tmp_path / "out" / "loadtest.json").read_text())
    assert on_disk == json.loads(json.dumps(doc))
    for key in ("stages", "max_rps_within_slo", "slo_p99_ms", "recommendation", "report_files"):
        assert key in on_disk
    for key in ("offered_rps", "achieved_rps", "p50_ms", "p99_ms", "error_rate", "hit_rate"):
        assert key in on_disk["stages"][0]
    assert on_disk["max_rps_within_slo"] == 99.5
    assert on_disk["protocol"] == "v1"
    assert on_disk["recommendation"]["replicas"] == 6
    assert "| 200 | 150.0 |" in (tmp_path / "out" / "report.md").read_text()
    pngs = [Path(p) for p in on_disk["report_files"] if p.endswith(".png")]
    assert len(pngs) == 4
    for path in on_disk["report_files"]:
        assert Path(path).is_file()
    for png in pngs:
        with Image.open(png) as img:
            img.verify()
        with Image.open(png) as img:
            assert img.size[0] > 100 and img.size[1] > 100
