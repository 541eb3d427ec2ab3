"""``tenantry serve`` and ``tenantry apikey``: thin wrappers over engine.serving."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

__all__ = ["add_commands"]


def _serve(args: argparse.Namespace) -> int:
    from engine.cli import emit
    from engine.serving.launch import start_serving
    from engine.settings import ServeSettings
    from registry import Registry
    from registry.errors import ValidationError

    settings = ServeSettings.from_env(registry=args.registry, host=args.host, port=args.port,
                                      replicas=args.replicas, cache_mb=args.cache_mb,
                                      api_keys_file=args.api_keys,
                                      allow_anonymous=args.allow_anonymous or None)
    problem = settings.exposure_problem()
    if problem:
        raise ValidationError(problem)
    Registry.open(args.registry)  # fail fast with a clear message
    handle = start_serving(settings, app_name=args.app_name, address=args.address)
    emit(args, {"url": handle.url, "replicas": settings.replicas, "cache_mb": settings.cache_mb},
         f"tenantry serving {settings.registry} at {handle.url} with {settings.replicas} "
         f"replicas x {settings.cache_mb:g} MB cache (Ctrl-C to stop)\n"
         f"  try: curl -s {handle.url}/v1/tenants/<tenant>/model ; docs at {handle.url}/docs")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(3600 if args.duration is None else args.duration):
            if args.duration is not None:
                break
    except KeyboardInterrupt:
        pass
    finally:
        handle.shutdown()
    return 0


def _apikey(args: argparse.Namespace) -> int:
    from engine.cli import emit
    from engine.serving.auth import add_key, revoke_key
    from registry import validate_tenant_id
    from registry.errors import ValidationError

    admin = args.admin or args.revoke_admin
    if args.revoke and args.revoke_admin:
        raise ValidationError("give either --revoke TENANT or --revoke-admin, not both")
    if not admin and args.tenant is None:
        raise ValidationError("name the tenant (tenantry apikey TENANT --file FILE) or use "
                              "--admin / --revoke-admin")
    if admin and args.tenant is not None:
        raise ValidationError("admin tokens belong to no tenant: drop the tenant argument")
    tenant = None if admin else validate_tenant_id(args.tenant)
    if args.revoke or args.revoke_admin:
        removed = revoke_key(args.file, tenant)
        what = "admin tokens" if tenant is None else f"API keys of {tenant}"
        emit(args, {"tenant_id": tenant, "admin": admin, "revoked": removed, "file": args.file},
             f"revoked {removed} {what} in {args.file} (running servers stop accepting them "
             "within a few seconds)")
        return 0
    key = add_key(args.file, tenant)
    emit(args, {"tenant_id": tenant, "admin": args.admin, "key": key, "file": args.file},
         f"{'admin token' if args.admin else 'API key for ' + str(tenant)}: {key}\n"
         f"(only its sha256 is stored in {args.file}; this is the only time it is shown)")
    return 0


def add_commands(sub: Any, parent: argparse.ArgumentParser) -> None:
    """Register ``tenantry serve`` and ``tenantry apikey``."""
    p = sub.add_parser("serve", parents=[parent], help="serve per-tenant predictions over HTTP")
    p.add_argument("--host", default=None,
                   help="address every node's ingress binds (default 127.0.0.1; 'auto' = the "
                        "node's Ray address); a non-loopback one needs --api-keys")
    p.add_argument("--port", type=int, default=None, help="ingress port (default 8080)")
    p.add_argument("--allow-anonymous", action="store_true",
                   help="serve a non-loopback address without API keys")
    p.add_argument("--replicas", type=int, default=None, help="model-host replicas (default 2)")
    p.add_argument("--cache-mb", type=float, default=None, help="model cache MB per replica")
    p.add_argument("--api-keys", default=None, help="hashed API key file (enables auth)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    p.add_argument("--app-name", default="tenantry")
    p.add_argument("--duration", type=float, default=None, help=argparse.SUPPRESS)
    p.set_defaults(handler=_serve)
    p = sub.add_parser("apikey", parents=[parent],
                       help="create (stored hashed) or revoke API keys")
    p.add_argument("tenant", nargs="?", help="tenant the key may call")
    p.add_argument("--admin", action="store_true", help="create an admin token instead")
    p.add_argument("--revoke", action="store_true",
                   help="revoke every key of the tenant instead of creating one")
    p.add_argument("--revoke-admin", action="store_true", help="revoke every admin token")
    p.add_argument("--file", required=True, help="key file holding the hashes")
    p.set_defaults(handler=_apikey)
