"""Progress display on stderr while buckets complete (stdout stays clean for ``--json``)."""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO

__all__ = ["LineProgress", "NullProgress", "Progress", "RichProgress", "make_progress"]


class Progress(Protocol):
    """Receives one call per finished bucket."""

    def start(self, buckets: int) -> None:
        """The run is about to train ``buckets`` buckets."""

    def bucket_done(self, trained: int, skipped: int, failed: int) -> None:
        """One more bucket finished, with these running totals."""

    def close(self) -> None:
        """The run finished (or failed)."""


class NullProgress:
    """Shows nothing."""

    def start(self, buckets: int) -> None:
        """Ignore."""

    def bucket_done(self, trained: int, skipped: int, failed: int) -> None:
        """Ignore."""

    def close(self) -> None:
        """Ignore."""


class LineProgress:
    """One line per finished bucket (for logs and non-terminals)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._total = self._done = 0
        self._t0 = time.perf_counter()

    def start(self, buckets: int) -> None:
        """Remember the total and the start time."""
        self._total, self._done, self._t0 = buckets, 0, time.perf_counter()

    def bucket_done(self, trained: int, skipped: int, failed: int) -> None:
        """Print the running totals."""
        self._done += 1
        rate = trained / max(time.perf_counter() - self._t0, 1e-9)
        print(f"[train] bucket {self._done}/{self._total}  trained {trained}  skipped {skipped}"
              f"  failed {failed}  {rate:.1f} models/s", file=self._stream, flush=True)

    def close(self) -> None:
        """Nothing to release."""


class RichProgress:
    """A live progress bar (for terminals)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as _Bar

        self._bar = _Bar(TextColumn("training buckets"), BarColumn(), MofNCompleteColumn(),
                         TimeElapsedColumn(), TextColumn("{task.description}"),
                         console=Console(stderr=True), transient=False)
        self._task = self._bar.add_task("", total=None)
        self._t0 = time.perf_counter()

    def start(self, buckets: int) -> None:
        """Show the bar."""
        self._t0 = time.perf_counter()
        self._bar.update(self._task, total=buckets)
        self._bar.start()

    def bucket_done(self, trained: int, skipped: int, failed: int) -> None:
        """Advance the bar."""
        rate = trained / max(time.perf_counter() - self._t0, 1e-9)
        self._bar.update(self._task, advance=1, description=(
            f"trained {trained} skipped {skipped} failed {failed}  {rate:.1f} models/s"))

    def close(self) -> None:
        """Stop redrawing."""
        self._bar.stop()


def make_progress(enabled: bool) -> Progress:
    """A rich bar on a terminal, plain lines otherwise, nothing when disabled.

    Args:
        enabled: whether to show progress at all.

    Returns:
        A :class:`Progress`.
    """
    if not enabled:
        return NullProgress()
    return RichProgress() if sys.stderr.isatty() else LineProgress()
