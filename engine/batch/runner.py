"""How a scoring run's buckets run: as Ray Data tasks (or in-process in tests), with a
progress line on stderr per finished bucket and the crash-test halt."""

from __future__ import annotations

import pickle
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from engine.batch.plan import ScoreBucket, in_blocks
from engine.batch.settings import ScoreSettings
from engine.batch.task import BucketResult, ScoreContext, score_bucket

__all__ = ["Runner", "ray_runner", "run_buckets"]

Runner = Callable[[ScoreContext, list[ScoreBucket], dict[str, float]], Iterator[BucketResult]]
"""Runs buckets and yields their results as they finish (Ray Data, or in-process in tests)."""


@dataclass(frozen=True)
class _BucketFn:
    """The Ray Data map function: a picklable callable around :func:`score_bucket`."""

    ctx: ScoreContext

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"result": pickle.dumps(score_bucket(self.ctx, pickle.loads(row["bucket"])))}


def ray_runner(settings: ScoreSettings) -> Runner:
    """Buckets as Ray Data tasks (one CPU each), on the Ray this process joins or starts."""
    def run(ctx: ScoreContext, buckets: list[ScoreBucket],
            resources: dict[str, float]) -> Iterator[BucketResult]:
        import ray.data

        from training.cluster import ensure_ray, quiet_unthrottled_data_context

        ensure_ray(settings.ray_address, settings.num_cpus)
        remote_args: dict[str, Any] = {"num_cpus": 1}
        if resources:
            remote_args["resources"] = resources
        blocks = min(len(buckets), settings.blocks or int(ray.cluster_resources().get("CPU", 1)))
        with quiet_unthrottled_data_context():  # buckets return KBs: no backpressure needed
            items = ray.data.from_items([{"bucket": pickle.dumps(b)}
                                         for b in in_blocks(buckets, max(blocks, 1))],
                                        override_num_blocks=max(blocks, 1))
            for row in items.map(_BucketFn(ctx), **remote_args).iter_rows():
                yield pickle.loads(row["result"])
    return run


class _Progress:
    """One line on stderr per finished bucket (stdout stays clean for ``--json``)."""

    def __init__(self, enabled: bool, total: int, stream: TextIO | None = None) -> None:
        self.enabled, self.total, self.done = enabled, total, 0
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()

    def bucket_done(self, results: list[BucketResult]) -> None:
        self.done += 1
        if not self.enabled:
            return
        rows = sum(r.rows for r in results)
        rate = rows / max(time.perf_counter() - self.t0, 1e-9)
        print(f"[score] bucket {self.done}/{self.total}  tenants "
              f"{sum(r.tenants for r in results)}  rows {rows}  failed "
              f"{sum(len(r.failed) for r in results)}  {rate:,.0f} rows/s",
              file=self.stream, flush=True)


def _halt(settings: ScoreSettings) -> None:
    """Crash-test hook: announce, then wait to be killed before anything is committed."""
    if settings.halt_marker:
        with open(settings.halt_marker, "w", encoding="utf-8") as fh:
            fh.write("halted")
    time.sleep(600)
    raise SystemExit("halted before committing (halt_after_buckets)")


def run_buckets(settings: ScoreSettings, runner: Runner, ctx: ScoreContext,
                 buckets: list[ScoreBucket], results: list[BucketResult]) -> None:
    """Run ``buckets``, appending their results (progress on stderr; the crash-test halt)."""
    progress = _Progress(settings.progress, len(buckets) + len(results))
    progress.done = len(results)
    for ran, result in enumerate(runner(ctx, buckets, settings.resources()), start=1):
        results.append(result)
        progress.bucket_done(results)
        if settings.halt_after_buckets and ran >= settings.halt_after_buckets:
            _halt(settings)
