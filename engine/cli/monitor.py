"""``tenantry monitor run | report``: thin wrappers over :mod:`engine.monitor`."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from engine.cli.output import Reply, add_ray_job_options, open_registry

__all__ = ["add_commands"]


def _run(args: argparse.Namespace, env: Mapping[str, str]) -> Reply:
    from engine.monitor.job import run_monitoring
    from engine.monitor.settings import MonitorSettings

    settings = MonitorSettings.from_env(env).with_overrides(
        min_rows=args.min_rows, num_cpus=args.num_cpus,
        progress=False if args.no_progress else None)
    report = run_monitoring(open_registry(args.registry, env), date=args.date, run_id=args.run_id,
                            settings=settings)
    return Reply(report.to_json(), report.summary_text)


def _report(args: argparse.Namespace, env: Mapping[str, str]) -> Reply:
    from engine.monitor.report import tenant_report
    from engine.monitor.tables import MONITORING, DeltaAppender
    from registry import validate_tenant_id

    reg = open_registry(args.registry, env)
    report = tenant_report(DeltaAppender.for_registry(reg, MONITORING),
                           validate_tenant_id(args.tenant), args.last)
    return Reply(report.to_json(), report.text)


def add_commands(sub: Any, parent: argparse.ArgumentParser) -> None:
    """Register ``tenantry monitor …``.

    Args:
        sub: the top-level sub-parsers object.
        parent: the parser carrying ``--registry`` and ``--json``.
    """
    mon = sub.add_parser("monitor", help="drift of production traffic against each model's "
                                         "training profile")
    msub = mon.add_subparsers(dest="monitor_command", required=True)
    p = msub.add_parser("run", parents=[parent],
                        help="judge one day of the prediction log (Ray Data); one row per "
                             "tenant into <registry>/monitoring")
    p.add_argument("--date", default=None,
                   help="day to judge, YYYY-MM-DD (default: the latest in the log)")
    p.add_argument("--run-id", default=None,
                   help="run id (default: monitor-<date>); a run id already written is "
                        "reported, not recomputed")
    p.add_argument("--min-rows", type=int, default=None,
                   help="rows a tenant's version needs that day to be judged (default 100)")
    add_ray_job_options(p)
    p.set_defaults(handler=_run)
    p = msub.add_parser("report", parents=[parent],
                        help="a tenant's latest monitoring figures and reasons, and its last runs")
    p.add_argument("tenant")
    p.add_argument("--last", type=int, default=10, help="runs listed (default %(default)s)")
    p.set_defaults(handler=_report)
