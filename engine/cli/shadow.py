"""``tenantry shadow set | clear | report``: thin wrappers over engine.shadow.

``set``/``clear`` append to the registry's ``shadow/config`` table directly (no server
needed); running replicas pick the change up within about a second.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from engine.cli.output import Reply, cli_actor, open_registry

__all__ = ["add_commands"]


def _set(args: argparse.Namespace, env: Mapping[str, str]) -> Reply:
    from engine.shadow import ConfigStore, ShadowTables, build_config
    from registry import Alias
    from registry.errors import ValidationError

    reg = open_registry(args.registry, env)
    snap = reg.snapshot()
    snap.versions(args.tenant)  # UnknownTenant before writing anything
    production = snap.alias_version(args.tenant, Alias.PRODUCTION)
    if args.version is not None:
        snap.version(args.tenant, args.version)
        if args.version == production:
            raise ValidationError(
                f"v{args.version} is {args.tenant}'s production version: shadowing it compares "
                f"production with itself (see tenantry registry history {args.tenant})")
    config = build_config(args.tenant, args.fraction, args.version, args.start, args.until,
                          actor=cli_actor(), reason=args.reason)
    if config.until is not None and config.until <= datetime.now(UTC):
        raise ValidationError(f"--until {config.until.isoformat()} is already past: the "
                              "shadow would never run")
    ConfigStore(ShadowTables.for_registry(reg)).set(config)
    resolved = config.version if config.version is not None else \
        snap.alias_version(args.tenant, Alias.SHADOW)
    doc = {**config.to_json(), "resolved_version": resolved}
    target = f"v{resolved}" if resolved is not None else "its shadow alias (none set yet)"
    return Reply(doc, f"{args.tenant}: mirroring {config.fraction:.0%} of requests to {target}"
                 + (f" until {config.until.isoformat()}" if config.until else ""))


def _clear(args: argparse.Namespace, env: Mapping[str, str]) -> Reply:
    from engine.shadow import ConfigStore, ShadowTables

    ConfigStore(ShadowTables.for_registry(open_registry(args.registry, env))).clear(
        args.tenant, actor=cli_actor(), reason=args.reason)
    return Reply({"tenant_id": args.tenant, "cleared": True}, f"{args.tenant}: shadow cleared")


def _report(args: argparse.Namespace, env: Mapping[str, str]) -> Reply:
    from engine.shadow import shadow_report
    from engine.shadow.config import parse_time

    reg = open_registry(args.registry, env)
    reg.snapshot().versions(args.tenant)  # an unknown tenant is an error, not an empty report
    report = shadow_report(reg, args.tenant, parse_time(args.since), args.shadow_version)
    return Reply(report.to_json(), report.text)


def add_commands(sub: Any, parent: argparse.ArgumentParser) -> None:
    """Register ``tenantry shadow …``."""
    shadow = sub.add_parser("shadow", help="mirror traffic to a shadow version and compare")
    ssub = shadow.add_subparsers(dest="shadow_command", required=True)
    p = ssub.add_parser("set", parents=[parent], help="shadow a tenant")
    p.add_argument("tenant")
    p.add_argument("--version", type=int, default=None,
                   help="shadow version (default: the tenant's shadow alias)")
    p.add_argument("--fraction", type=float, required=True, help="share of requests, 0..1")
    p.add_argument("--start", default=None, help="ISO 8601 time to start (default: now)")
    p.add_argument("--until", default=None, help="ISO 8601 time to stop by itself")
    p.add_argument("--reason", default=None, help="why, recorded in the shadow config log")
    p.set_defaults(handler=_set)
    p = ssub.add_parser("clear", parents=[parent], help="stop shadowing a tenant")
    p.add_argument("tenant")
    p.add_argument("--reason", default=None, help="why, recorded in the shadow config log")
    p.set_defaults(handler=_clear)
    p = ssub.add_parser("report", parents=[parent], help="compare shadow with production")
    p.add_argument("tenant")
    p.add_argument("--since", default=None, help="only pairs at or after this ISO 8601 time")
    p.add_argument("--shadow-version", type=int, default=None,
                   help="report on this shadow version (default: the latest logged)")
    p.set_defaults(handler=_report)
