"""``tenantry loadtest``: find a deployment's capacity and size it, or footprint one model."""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.cli.output import Reply, storage_options
from engine.loadtest.capacity import is_lower_bound, max_within_slo, recommend, target_curve
from engine.loadtest.footprint import measure_footprint, registry_artifact
from engine.loadtest.progress import ProgressDisplay
from engine.loadtest.report import write_report
from engine.loadtest.runner import LoadTestConfig, parse_target, run_loadtest
from engine.loadtest.schedule import Arrivals, parse_rates
from engine.loadtest.tenants import TenantSet, choose_tenants
from engine.loadtest.workload import WireProtocol
from registry.errors import RegistryNotFound, Unavailable, ValidationError
from registry.settings import DEFAULT_ROOT

__all__ = ["add_commands"]

_DEFAULT_MODEL_BYTES = 128 * 1024  # ~RSS of a 50-tree depth-5 booster (BASELINES.md)


def add_commands(sub: Any, parent: argparse.ArgumentParser) -> None:
    """Register ``loadtest`` on the ``tenantry`` parser."""
    p = sub.add_parser("loadtest", parents=[parent], help="capacity test a tenantry endpoint",
                       description=__doc__)
    p.add_argument("--url", help="server base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--tenants", type=int, help="tenants to draw from (registry sample or N "
                   "synthetic; default all registry tenants or 100)")
    p.add_argument("--zipf", type=float, default=1.1, help="Zipf popularity exponent")
    p.add_argument("--rates", default="50,100,200,400,800", help="offered req/s per stage")
    p.add_argument("--duration", type=float, default=10.0, help="hold seconds per stage")
    p.add_argument("--ramp", type=float, default=1.0, help="ramp seconds before each hold")
    p.add_argument("--slo-p99-ms", type=float, default=50.0)
    p.add_argument("--out", default="./tenantry-data/loadtest", help="report directory")
    p.add_argument("--target-rps", type=float, help="rate to size for (default: top rate)")
    p.add_argument("--target-tenants", type=int, help="tenants to size for (default: tested)")
    p.add_argument("--target-hit-rate", type=float, default=0.95)
    p.add_argument("--replicas", type=int, help="replicas measured (default: tenantry_replicas "
                   "from /metrics, else 1)")
    p.add_argument("--workers", type=int, default=1, help="load-generating processes")
    p.add_argument("--connections", type=int, default=256, help="connections per process")
    p.add_argument("--features", type=int, default=20, help="feature width (synthetic)")
    p.add_argument("--tenant-source", choices=("auto", "registry", "synthetic"), default="auto")
    p.add_argument("--cold-fraction", type=float, default=0.0,
                   help="share of requests to a uniformly random (mostly cold) tenant")
    p.add_argument("--rows", type=int, default=1, help="rows per request")
    p.add_argument("--protocol", choices=[w.value for w in WireProtocol], default="v1",
                   help="v1: POST /v1/tenants/T/predict; v2: Open Inference Protocol "
                        "POST /v2/models/T/infer")
    p.add_argument("--arrivals", choices=[a.value for a in Arrivals], default="uniform")
    p.add_argument("--timeout", type=float, default=5.0, help="request timeout seconds")
    p.add_argument("--unmarked", action="store_true",
                   help="do not send x-tenantry-synthetic: 1 (requests count as real traffic, "
                        "e.g. shadow pairs are logged)")
    p.add_argument("--multiplexed-header", action="store_true",
                   help="also send serve_multiplexed_model_id: TENANT (stock Serve baseline)")
    p.add_argument("--all-stages", action="store_true", help="do not stop at the first failure")
    p.add_argument("--no-refine", action="store_true", help="no midpoint stage after a failure")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--footprint", metavar="TENANT", help="measure one model instead of load")
    p.add_argument("--artifact", help="with --footprint: a local model file, not the registry")
    p.set_defaults(handler=_loadtest)


def _check_reachable(url: str) -> None:
    target = parse_target(url)
    try:
        socket.create_connection((target.host, target.port), timeout=3.0).close()
    except OSError as exc:
        raise Unavailable(f"cannot connect to {url}: {exc.strerror or exc}") from None


def _footprint(args: argparse.Namespace) -> Reply:
    if args.artifact:
        try:
            data, version, width = Path(args.artifact).read_bytes(), None, None
        except OSError as exc:
            raise ValidationError(f"cannot read {args.artifact}: {exc.strerror}") from None
    else:
        data, version, width = registry_artifact(args.registry, args.footprint)
    fp = measure_footprint(data, args.footprint, version, width).to_dict()
    text = "\n".join(f"{k:>20}: {v}" for k, v in fp.items())
    return Reply(fp, text)


def _validate(args: argparse.Namespace) -> list[float]:
    if not args.url:
        raise ValidationError("loadtest needs --url (or --footprint TENANT)")
    try:
        rates = parse_rates(args.rates)
    except ValueError as exc:
        raise ValidationError(f"--rates: {exc}") from None
    checks = [(args.duration > 0, "--duration must be > 0"), (args.ramp >= 0, "--ramp >= 0"),
              (args.workers >= 1, "--workers must be >= 1"), (args.zipf >= 0, "--zipf >= 0"),
              (args.tenants is None or args.tenants >= 1, "--tenants must be >= 1"),
              (0 < args.target_hit_rate <= 1, "--target-hit-rate must be in (0, 1]"),
              (0 <= args.cold_fraction <= 1, "--cold-fraction must be in [0, 1]"),
              (args.slo_p99_ms > 0, "--slo-p99-ms must be > 0")]
    for ok, message in checks:
        if not ok:
            raise ValidationError(message)
    return rates


def _check_out(out: str) -> None:
    """The report directory can be created and written, before any load is sent."""
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".tenantry-write-check-"):
            pass
    except OSError as exc:
        raise ValidationError(f"--out {out}: cannot write the report there: "
                              f"{exc.strerror or exc}") from None


def _tenants(args: argparse.Namespace, env: Mapping[str, str]) -> TenantSet:
    """The tenants to load. ``auto`` falls back to synthetic ids only when ``--registry``
    is the built-in default and nothing is there; a registry that was named (flag or
    ``TENANTRY_REGISTRY``) or a path that exists must be a registry."""
    source = args.tenant_source
    root = args.registry
    if source == "auto" and (root != DEFAULT_ROOT or Path(root).exists()):
        source = "registry"
    try:
        return choose_tenants(source, root, args.tenants, args.features, args.seed,
                              storage_options(root, env))
    except RegistryNotFound:
        raise RegistryNotFound(f"--registry {root}: no tenantry registry there; name the "
                               f"registry the server serves, or pass --tenant-source "
                               f"synthetic") from None


def _loadtest(args: argparse.Namespace, env: Mapping[str, str]) -> Reply:
    if args.footprint:
        return _footprint(args)
    rates = _validate(args)
    tenants = _tenants(args, env)
    _check_reachable(args.url)
    _check_out(args.out)
    config = LoadTestConfig(
        url=args.url, tenants=tenants.ids, widths=tenants.widths, rates=tuple(rates),
        hold_s=args.duration, ramp_s=args.ramp, slo_p99_ms=args.slo_p99_ms, zipf_s=args.zipf,
        cold_fraction=args.cold_fraction, rows_per_request=args.rows, workers=args.workers,
        connections=args.connections, timeout_s=args.timeout, refine=not args.no_refine,
        stop_on_fail=not args.all_stages, multiplexed_header=args.multiplexed_header,
        synthetic=not args.unmarked,
        arrivals=Arrivals(args.arrivals), seed=args.seed,
        protocol=WireProtocol(args.protocol))
    display = ProgressDisplay(enabled=not args.no_progress)
    display.note(f"loadtest: {len(tenants.ids)} {tenants.source} tenants, rates {rates}, "
                 f"{args.duration:g}s per stage, {args.workers} load process(es), "
                 f"protocol {args.protocol}")
    try:
        run = run_loadtest(config, display)
    finally:
        display.close()
    target_tenants = args.target_tenants or len(tenants.ids)
    measured_replicas = args.replicas or int(run.replicas_seen or 1)
    rec = recommend(max_within_slo(run.stages), measured_replicas,
                    args.target_rps or max(rates), target_tenants,
                    target_curve(target_tenants, args.zipf, args.cold_fraction, args.seed),
                    args.target_hit_rate, run.mean_model_bytes or _DEFAULT_MODEL_BYTES,
                    lower_bound=is_lower_bound(run.stages))
    doc = write_report(run, rec, args.out)
    doc["tenant_source"] = tenants.source
    return Reply(doc, lambda: (Path(args.out) / "report.md").read_text()
                 + f"\nreport files: {json.dumps(doc['report_files'])}")
