"""The monitoring guide's pandas query (docs/monitoring.md) (tenants ranked by AUC change over a week) runs as printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from registry import NewVersion, Registry

ROOT = Path(__file__).resolve().parents[4]


def _query() -> str:
    guide = (ROOT / "docs" / "monitoring.md").read_text()
    section = guide[guide.index("# Model quality monitoring"):]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "no python block in the monitoring section"
    return match.group(1)


def test_the_week_query_ranks_tenants_by_auc_change(tmp_path: Path) -> None:
    reg = Registry.create(str(tmp_path / "tenantry-data" / "registry"), num_shards=2)
    nights = {  # tenant -> (date, auc) per nightly version
        "falling": [("2026-11-01", 0.50), ("2026-11-23", 0.90), ("2026-11-27", 0.86),
                    ("2026-11-30", 0.80)],  # the November 1st version is outside the week
        "rising": [("2026-11-23", 0.70), ("2026-11-30", 0.75)],
        "steady": [("2026-11-24", 0.85), ("2026-11-30", 0.85)],
    }
    for tenant, points in nights.items():
        for k, (date, auc) in enumerate(points):
            run = f"{tenant}-{k}"
            staged = reg.stage_artifact(tenant, b"not read here", run)
            reg.publish(run, [NewVersion(staged, ("a",), {"auc": auc}, data_date=date)])
    done = subprocess.run([sys.executable, "-c", _query()], cwd=tmp_path, text=True,
                          capture_output=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.strip().splitlines()[1:]]
    assert [t for t, _ in lines] == ["falling", "steady", "rising"]
    assert [round(float(v), 2) for _, v in lines] == [-0.10, 0.0, 0.05]
