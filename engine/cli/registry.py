"""``tenantry registry …`` commands: thin wrappers over :class:`registry.Registry`."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from engine.cli.output import Reply, cli_actor, open_registry
from registry.gc import collect_garbage
from registry.registry import AliasEvent
from registry.types import Alias, ModelVersion

__all__ = ["add_commands"]


_HEADLINE = {"reg:squarederror": "rmse", "multi:softprob": "mlogloss"}  # else auc


def _version_line(mv: ModelVersion | None) -> str:
    if mv is None:
        return "-"
    metric = _HEADLINE.get(mv.objective, "auc")
    value = mv.metrics.get(metric)
    value_s = f"{value:.4f}" if isinstance(value, float) else "n/a"
    kind = "" if mv.objective == "binary:logistic" else (
        f"{mv.objective}" + (f" x{mv.num_class}" if mv.num_class else "") + ", ")
    return (f"v{mv.version} ({kind}{metric} {value_s}, run {mv.run_id}, "
            f"{mv.created_at:%Y-%m-%d %H:%M})")


def _list(args: argparse.Namespace, env: Mapping[str, str]) -> Reply:
    rows = open_registry(args.registry, env).list_tenants()

    def text() -> str:
        lines = [f"{'tenant':<24} {'shard':>5} {'production':>10} {'shadow':>7} {'latest':>7}"]
        for r in rows:
            lines.append(f"{r.tenant_id:<24} {r.shard:>5} {r.production_version or '-':>10} "
                         f"{r.shadow_version or '-':>7} {r.latest_version:>7}")
        lines.append(f"{len(rows)} tenants")
        return "\n".join(lines)

    return Reply([r.to_json() for r in rows], text)


def _show(args: argparse.Namespace, env: Mapping[str, str]) -> Reply:
    tm = open_registry(args.registry, env).get(args.tenant)
    return Reply(tm.to_json(), f"tenant {tm.tenant_id} (shard {tm.shard})\n"
                 f"  production: {_version_line(tm.production)}\n"
                 f"  shadow:     {_version_line(tm.shadow)}")


def _event_line(e: AliasEvent) -> str:
    target = f"v{e.version}" if e.version is not None else "-"
    who = e.actor or (f"run {e.run_id}" if e.run_id else "?")
    at = f"{e.at:%Y-%m-%d %H:%M:%S}" if e.at else "?"
    return f"{at}  {e.alias:<10} {e.action:<8} {target:>5}  by {who}: {e.reason or ''}"


def _history(args: argparse.Namespace, env: Mapping[str, str]) -> Reply:
    reg = open_registry(args.registry, env)
    if args.events:
        reg.history(args.tenant)  # an unknown tenant is an error, not an empty list
        events = reg.alias_events(args.tenant)
        return Reply([e.to_json() for e in events],
                     "\n".join(_event_line(e) for e in events) or "no alias moves")
    versions = reg.history(args.tenant)
    return Reply([v.to_json() for v in versions],
                 "\n".join(_version_line(v) for v in versions))


_SPARKS = "▁▂▃▄▅▆▇█"


def _trend(args: argparse.Namespace, env: Mapping[str, str]) -> Reply:
    points = open_registry(args.registry, env).trend(args.tenant, args.metric)
    values = [p.value for p in points if p.value is not None]
    change = values[-1] - values[0] if len(values) > 1 else None
    doc = {"tenant_id": args.tenant, "metric": args.metric,
           "points": [p.to_json() for p in points], "first": values[0] if values else None,
           "last": values[-1] if values else None, "change": change}

    def text() -> str:
        low, high = min(values, default=0.0), max(values, default=0.0)
        spark = "".join(_SPARKS[round((v - low) / (high - low) * 7) if high > low else 3]
                        for v in values)
        lines = [f"{args.tenant} {args.metric} over {len(points)} versions  {spark}"]
        prev: float | None = None
        for p in points:
            value = "n/a" if p.value is None else f"{p.value:.4f}"
            delta = f" ({p.value - prev:+.4f})" if p.value is not None and prev is not None \
                else ""
            lines.append(f"  {p.data_date or '?':<10}  v{p.version:<4} {value}{delta}  "
                         f"run {p.run_id}")
            prev = p.value if p.value is not None else prev
        if change is not None:
            lines.append(f"  change {change:+.4f} from the first to the last")
        return "\n".join(lines)

    return Reply(doc, text)


def _promote(args: argparse.Namespace, env: Mapping[str, str]) -> Reply:
    reg = open_registry(args.registry, env)
    shadow_before = reg.snapshot().alias_version(args.tenant, Alias.SHADOW)
    mv = reg.promote(args.tenant, args.version, args.alias, reason=args.reason,
                     actor=cli_actor())
    cleared = args.alias == Alias.PRODUCTION.value and shadow_before == mv.version
    return Reply({"tenant_id": args.tenant, "alias": args.alias, "version": mv.version,
                 "shadow_cleared": cleared},
          f"{args.tenant}: {args.alias} -> v{mv.version}"
          + (" (it was the shadow version: shadow cleared)" if cleared else ""))


def _rollback(args: argparse.Namespace, env: Mapping[str, str]) -> Reply:
    mv = open_registry(args.registry, env).rollback(args.tenant, actor=cli_actor(),
                                               reason=args.reason)
    return Reply({"tenant_id": args.tenant, "alias": "production", "version": mv.version},
                 f"{args.tenant}: production rolled back to v{mv.version}")


def _gc(args: argparse.Namespace, env: Mapping[str, str]) -> Reply:
    report = collect_garbage(open_registry(args.registry, env), keep=args.keep,
                             orphan_grace_s=args.orphan_grace, vacuum_hours=args.vacuum_hours)
    doc: dict[str, Any] = report.to_json()
    return Reply(doc, " ".join(f"{k}={v}" for k, v in doc.items()))


def _init(args: argparse.Namespace, env: Mapping[str, str]) -> Reply:
    reg = open_registry(args.registry, env, args.shards)
    return Reply({"root": reg.root, "num_shards": reg.num_shards},
                 f"registry at {reg.root} with {reg.num_shards} shards")


def add_commands(sub: Any, parent: argparse.ArgumentParser) -> None:
    """Register ``tenantry registry …``."""
    reg = sub.add_parser("registry", help="inspect and manage the model registry")
    rsub = reg.add_subparsers(dest="registry_command", required=True)
    p = rsub.add_parser("init", parents=[parent], help="create a registry")
    p.add_argument("--shards", type=int, default=16)
    p.set_defaults(handler=_init)
    rsub.add_parser("list", parents=[parent], help="every tenant and its aliases") \
        .set_defaults(handler=_list)
    for name, fn, hlp in (("show", _show, "a tenant's production and shadow versions"),
                          ("history", _history, "every version of a tenant, newest first"),
                          ("rollback", _rollback, "move production back one version")):
        p = rsub.add_parser(name, parents=[parent], help=hlp)
        p.add_argument("tenant")
        p.set_defaults(handler=fn)
        if name == "history":
            p.add_argument("--events", action="store_true",
                           help="the alias moves instead (who, when, why), newest first")
        if name == "rollback":
            p.add_argument("--reason", default=None, help="why, recorded in the alias log")
    p = rsub.add_parser("trend", parents=[parent],
                        help="one metric of every version of a tenant, night by night")
    p.add_argument("tenant")
    p.add_argument("--metric", default="auc",
                   help="a holdout metric the versions record (default %(default)s; e.g. "
                        "logloss, rmse, n_train)")
    p.set_defaults(handler=_trend)
    p = rsub.add_parser("promote", parents=[parent], help="point an alias at a version")
    p.add_argument("tenant")
    p.add_argument("version", type=int)
    p.add_argument("--alias", default="production", choices=["production", "shadow"])
    p.add_argument("--reason", default=None, help="why, recorded in the alias log")
    p.set_defaults(handler=_promote)
    p = rsub.add_parser("gc", parents=[parent], help="remove old versions and orphans, compact")
    p.add_argument("--keep", type=int, default=5, help="newest versions kept per tenant")
    p.add_argument("--orphan-grace", type=float, default=3600.0,
                   help="seconds an unpublished artifact is left alone (default %(default)s); "
                        "a run holding a live lease is never touched")
    p.add_argument("--vacuum-hours", type=int, default=168)
    p.set_defaults(handler=_gc)
