"""``tenantry data generate|import`` and ``tenantry train``: thin wrappers over the library."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from engine.cli.output import Reply, add_ray_job_options, open_registry, storage_options
from registry import RegistryNotFound
from training.errors import InvalidTrainingInput
from training.generate import GeneratorConfig, generate
from training.importer import import_file
from training.job import run_training
from training.settings import TrainingSettings
from training.spec import load_spec

__all__ = ["add_commands"]


def _registry_shards(root: str, env: Mapping[str, str]) -> int:
    try:
        return open_registry(root, env).num_shards
    except RegistryNotFound:
        return 16


def _generate(args: argparse.Namespace, env: Mapping[str, str]) -> Reply:
    shards = args.shards if args.shards is not None else _registry_shards(args.registry, env)
    config = GeneratorConfig(tenants=args.tenants, days=args.days, seed=args.seed,
                             num_shards=shards, start_date=args.start, mean_rows=args.mean_rows)
    s = generate(args.out, config, overwrite=args.overwrite)
    doc: dict[str, Any] = {"path": s.path, "tenants": s.tenants, "days": s.days, "rows": s.rows,
                           "shards": shards, "dates": list(s.dates), "kinds": s.kinds,
                           "drifts": s.drifts}
    return Reply(doc, f"wrote {s.rows} rows for {s.tenants} tenants over {s.days} days "
                 f"({s.dates[0]}..{s.dates[-1]}, {shards} shards) to {s.path}\n"
                 f"kinds {s.kinds}  drift {s.drifts}")


def _train(args: argparse.Namespace, env: Mapping[str, str]) -> Reply:
    settings = TrainingSettings.from_env(env).with_overrides(
        window_days=args.window, auc_tolerance=args.tolerance, num_cpus=args.num_cpus,
        buckets_per_shard=args.buckets_per_shard, progress=False if args.no_progress else None)
    spec = None
    if args.spec:
        overrides = {"window_days": args.window, "gate.tolerance": args.tolerance}
        spec = load_spec(args.spec, {k: v for k, v in overrides.items() if v is not None})
    elif not args.data:
        raise InvalidTrainingInput("train needs --data PATH or --spec FILE")
    report = run_training(args.data, args.registry, date=args.date, run_id=args.run_id,
                          settings=settings, spec=spec, spec_name=args.spec or "<spec>",
                          storage_options=storage_options(args.registry, env))
    return Reply(report.to_json(), report.summary_text)


def _import(args: argparse.Namespace, env: Mapping[str, str]) -> Reply:
    report = import_file(args.source, args.out, load_spec(args.spec),
                         open_registry(args.registry, env),
                         spec_name=args.spec)
    return Reply(report.to_json(), report.summary_text)


def add_commands(sub: Any, parent: argparse.ArgumentParser) -> None:
    """Register ``data generate`` and ``train`` on the ``tenantry`` parser.

    Args:
        sub: the top-level sub-parsers object.
        parent: the parser carrying ``--registry`` and ``--json``.
    """
    data = sub.add_parser("data", help="feature data: synthetic, or imported from a file")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    gen = data_sub.add_parser("generate", parents=[parent],
                              help="write a synthetic multi-tenant feature table (Delta)")
    gen.add_argument("--out", required=True, help="table path to create")
    gen.add_argument("--tenants", type=int, default=100, help="number of tenants")
    gen.add_argument("--days", type=int, default=8, help="number of days (one partition each)")
    gen.add_argument("--seed", type=int, default=0, help="random seed (output is deterministic)")
    gen.add_argument("--shards", type=int, default=None,
                     help="shard count (default: the registry's, else 16)")
    gen.add_argument("--start", default="2024-01-01", help="first date, YYYY-MM-DD")
    gen.add_argument("--mean-rows", type=float, default=1000.0,
                     help="mean rows per tenant over all days (sizes are heavy-tailed)")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing table")
    gen.set_defaults(handler=_generate)
    imp = data_sub.add_parser(
        "import", parents=[parent],
        help="import a CSV or Parquet file into a feature table laid out for training")
    imp.add_argument("--from", dest="source", required=True, help="CSV or Parquet file")
    imp.add_argument("--out", default=None,
                     help="Delta table to append to (default: the spec's table)")
    imp.add_argument("--spec", required=True, help="training spec (YAML or TOML)")
    imp.set_defaults(handler=_import)

    train = sub.add_parser("train", parents=[parent],
                           help="train one model per tenant on Ray Data and publish the run")
    train.add_argument("--data", default=None,
                       help="input table: Delta or Parquet (default: the spec's table)")
    train.add_argument("--spec", default=None,
                       help="training spec, YAML or TOML (default: the synthetic table's)")
    train.add_argument("--date", default=None,
                       help="run date YYYY-MM-DD, the holdout day (default: latest in the data)")
    train.add_argument("--run-id", default=None, help="run id (default: train-<date>)")
    train.add_argument("--window", type=int, default=None,
                       help="days of data incl. the date (overrides the spec's window_days)")
    train.add_argument("--tolerance", type=float, default=None,
                       help="promotion gate: how much worse the gate metric may be "
                            "(overrides the spec's gate.tolerance)")
    add_ray_job_options(train)
    train.add_argument("--buckets-per-shard", type=int, default=None,
                       help="training buckets per registry shard")
    train.set_defaults(handler=_train)
