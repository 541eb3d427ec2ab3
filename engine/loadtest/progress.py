"""Progress display while stages run: a live bar on a terminal, one line per stage otherwise.

Everything goes to stderr so ``--json`` output on stdout stays one clean document.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from engine.loadtest.schedule import Stage
from engine.loadtest.stats import StageResult

__all__ = ["ProgressDisplay", "format_stage"]


def format_stage(index: int, total: int, result: StageResult) -> str:
    """One summary line for a finished stage."""
    hit = "n/a" if result.hit_rate is None else f"{result.hit_rate:.3f}"
    verdict = "PASS" if result.passed else "FAIL"
    behind = "  GENERATOR BEHIND SCHEDULE" if result.generator_behind else ""
    return (f"stage {index}/{total} {result.offered_rps:g} req/s offered: "
            f"{result.achieved_rps:.1f} achieved, p50 {result.p50_ms:.1f} ms, "
            f"p99 {result.p99_ms:.1f} ms, errors {result.error_rate:.2%}, hit {hit} "
            f"[{verdict}]{behind}")


class ProgressDisplay:
    """Shows the running stage (sent/done counts) and a line per finished stage."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._live: Any = None
        self._task: Any = None
        if enabled and self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._live = Progress(TextColumn("{task.description}"), BarColumn(),
                                  TextColumn("{task.fields[detail]}"), TimeRemainingColumn(),
                                  console=Console(file=self.stream), transient=True)
            self._live.start()

    def stage_started(self, index: int, total: int, stage: Stage, requests: int) -> None:
        """A stage is about to send ``requests`` requests."""
        if self._live is not None:
            if self._task is not None:
                self._live.remove_task(self._task)
            self._task = self._live.add_task(
                f"stage {index}/{total} {stage.rate_rps:g} req/s", total=requests, detail="")

    def tick(self, sent: int, done: int) -> None:
        """Update the running stage's counts."""
        if self._live is not None and self._task is not None:
            self._live.update(self._task, completed=done, detail=f"sent {sent} done {done}")

    def stage_finished(self, index: int, total: int, result: StageResult) -> None:
        """Print the finished stage's summary line."""
        if not self.enabled:
            return
        line = format_stage(index, total, result)
        if self._live is not None:
            self._live.console.print(line)
        else:
            print(line, file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """Print an informational line."""
        if self.enabled:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """Stop the live display."""
        if self._live is not None:
            self._live.stop()
            self._live = None
