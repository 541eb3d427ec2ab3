"""``tenantry score``: a thin wrapper over :func:`engine.batch.job.run_scoring`."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from engine.cli.output import Reply, add_ray_job_options, storage_options

__all__ = ["add_commands"]


def _score(args: argparse.Namespace, env: Mapping[str, str]) -> Reply:
    from engine.batch.job import run_scoring
    from engine.batch.settings import ScoreSettings

    settings = ScoreSettings.from_env(env).with_overrides(
        num_cpus=args.num_cpus, buckets_per_shard=args.buckets_per_shard,
        progress=False if args.no_progress else None)
    spec = None
    if args.spec:
        from training.spec import load_spec

        spec = load_spec(args.spec)
    report = run_scoring(args.data, args.registry, args.out, date=args.date, alias=args.alias,
                         run_id=args.run_id, row_key=args.row_key, settings=settings,
                         spec=spec, storage_options=storage_options(args.registry, env))
    return Reply(report.to_json(), report.summary_text)


def add_commands(sub: Any, parent: argparse.ArgumentParser) -> None:
    """Register ``score`` on the ``tenantry`` parser.

    Args:
        sub: the top-level sub-parsers object.
        parent: the parser carrying ``--registry`` and ``--json``.
    """
    score = sub.add_parser(
        "score", parents=[parent],
        help="score one day of a feature table with every tenant's model (Ray Data) into a "
             "Delta predictions table")
    score.add_argument("--data", default=None,
                       help="feature table path (Delta partitioned by shard and date; with "
                            "--spec: default the spec's table)")
    score.add_argument("--spec", default=None,
                       help="training spec (YAML or TOML): score its table, read with its "
                            "tenant and time columns (Parquet or any Delta layout)")
    score.add_argument("--date", default=None,
                       help="day to score, YYYY-MM-DD (default: the latest in the data)")
    score.add_argument("--out", required=True, help="predictions table path (Delta)")
    score.add_argument("--alias", default="production", choices=("production", "shadow"),
                       help="shadow: also score each tenant's shadow version, side by side")
    score.add_argument("--run-id", default=None,
                       help="run id (default: score-<date>[-shadow]); a published id is a "
                            "no-op, an interrupted one resumes")
    score.add_argument("--row-key", default=None,
                       help="row-identity column of the data (default: row_id if present, "
                            "else row_index = the row's ordinal within tenant and date)")
    add_ray_job_options(score)
    score.add_argument("--buckets-per-shard", type=int, default=None,
                       help="scoring tasks per shard")
    score.set_defaults(handler=_score)
