"""Capacity reports found under the console's ``--reports`` folder.

A report is a folder holding ``loadtest.json`` (written by ``tenantry loadtest --out DIR``)
and usually its ``report.md`` and PNG plots. The folder itself and its sub-folders two
levels down are searched. Plots are served only by the key a scan gave them, never by a
path from the request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from registry.errors import NotFound

__all__ = ["CapacityReport", "find_plot", "scan_reports"]

MAX_DEPTH = 2
MAX_REPORTS = 200


@dataclass(frozen=True)
class CapacityReport:
    """One load-test report folder."""

    key: str  # the folder relative to the reports root ("." for the root itself)
    folder: Path
    doc: dict[str, Any]
    plots: tuple[str, ...]  # PNG file names in the folder
    modified: datetime

    @property
    def stages(self) -> list[dict[str, Any]]:
        """Measured stages, by offered rate."""
        stages = [s for s in self.doc.get("stages") or [] if isinstance(s, dict)]
        return sorted(stages, key=lambda s: s.get("offered_rps") or 0)

    @property
    def recommendation(self) -> dict[str, Any]:
        """The sizing recommendation (empty when absent)."""
        rec = self.doc.get("recommendation")
        return rec if isinstance(rec, dict) else {}


def scan_reports(root: str | Path) -> list[CapacityReport]:
    """Every readable report under ``root``, newest first (unreadable ones are skipped)."""
    base = Path(root)
    if not str(root) or not base.is_dir():
        return []
    found: list[CapacityReport] = []
    for depth in range(MAX_DEPTH + 1):
        pattern = "/".join(["*"] * depth + ["loadtest.json"])
        for path in base.glob(pattern):
            report = _load(base, path)
            if report is not None:
                found.append(report)
    found.sort(key=lambda r: r.modified, reverse=True)
    return found[:MAX_REPORTS]


def _load(base: Path, path: Path) -> CapacityReport | None:
    try:
        doc = json.loads(path.read_text())
        modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    folder = path.parent
    key = folder.relative_to(base).as_posix() or "."
    plots = tuple(sorted(p.name for p in folder.glob("*.png") if p.is_file()))
    return CapacityReport(key, folder, doc, plots, modified)


def find_plot(reports: list[CapacityReport], key: str, name: str) -> Path:
    """The file of plot ``name`` of report ``key``, as a scan listed it.

    Raises:
        NotFound: no such report or plot.
    """
    for report in reports:
        if report.key == key and name in report.plots:
            return report.folder / name
    raise NotFound(f"no plot {name!r} in report {key!r}")
