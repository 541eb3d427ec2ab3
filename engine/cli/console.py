"""``tenantry console``: serve the web console (uvicorn, one process)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

from engine.cli.output import emit, storage_options

__all__ = ["add_commands"]


def _console(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    import uvicorn

    from engine.console.app import build_console, create_app
    from engine.console.settings import ConsoleSettings
    from registry.errors import ValidationError

    settings = ConsoleSettings.from_env(env, registry=args.registry, host=args.host,
                                        port=args.port, api_keys_file=args.api_keys,
                                        reports_dir=args.reports,
                                        allow_anonymous=args.allow_anonymous or None)
    problem = settings.exposure_problem()
    if problem:
        raise ValidationError(problem)
    # fails fast: no registry, unreadable key file
    console = build_console(settings, storage_options=storage_options(settings.registry, env))
    app = create_app(settings, console)
    url = f"http://{settings.host}:{settings.port}/"
    tenants = len(console.index.view.entries)
    mode = "admin actions need the admin token" if console.auth.writable else "read-only"
    emit(args, {"url": url, "registry": settings.registry, "tenants": tenants,
                "writable": console.auth.writable, "pid": os.getpid()},
         f"tenantry console for {settings.registry} at {url} ({tenants} tenants; {mode}; "
         "Ctrl-C to stop)")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning",
                server_header=False)
    return 0


def add_commands(sub: Any, parent: argparse.ArgumentParser) -> None:
    """Register ``tenantry console``."""
    p = sub.add_parser("console", parents=[parent],
                       help="web console over the registry, runs, shadow and capacity reports")
    p.add_argument("--host", default=None,
                   help="address to bind (default 127.0.0.1); a non-loopback one needs "
                        "--api-keys or --allow-anonymous")
    p.add_argument("--port", type=int, default=None, help="port (default 8090)")
    p.add_argument("--api-keys", default=None,
                   help="hashed API key file (tenantry apikey): pages need a key, actions "
                        "the admin token; without it the console is read-only")
    p.add_argument("--reports", default=None,
                   help="folder holding tenantry loadtest reports (searched 2 levels deep)")
    p.add_argument("--allow-anonymous", action="store_true",
                   help="bind a non-loopback address without API keys (read-only)")
    p.set_defaults(handler=_console)
