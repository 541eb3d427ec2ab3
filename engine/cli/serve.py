"""``tenantry serve`` and ``tenantry apikey``: thin wrappers over engine.serving."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from engine.cli.output import Reply, emit, open_registry, storage_options

__all__ = ["add_commands"]


class _StopDuringStart(BaseException):
    """A stop signal arrived before serving was up (unwinds the start)."""


class _StopSignals:
    """SIGTERM and SIGINT, to the process or its whole group, mean "stop cleanly".

    Before serving is up the first signal unwinds the start; afterwards it only wakes the
    main thread, which runs the stop sequence. Later signals are ignored: the stop is
    bounded, and a supervisor that will not wait sends SIGKILL (the private Ray dies with
    this process).
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.started = False
        self.signal_name = ""
        self._previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        self.install()

    def install(self) -> None:
        """(Re)install the handlers."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def restore(self) -> None:
        """Put back the handlers there were before (the command is done)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the signals back while Ray connects, then put these handlers back.

        Connecting installs Ray's own SIGTERM handlers (a driver's exits with status 15,
        its core worker's crash handler prints a stack and may abort); a signal that
        arrives meanwhile is delivered to these handlers once the block ends. Threads
        Ray starts meanwhile inherit the block, so signals reach the main thread.
        """
        stops = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, stops)
        try:
            yield
        finally:
            self.install()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        first = not self.event.is_set()
        self.event.set()
        if first:
            self.signal_name = signal.Signals(signum).name
            print(f"tenantry: {self.signal_name}: stopping (ingress refuses new "
                  "connections, in-flight requests finish, shadow pairs are written)",
                  file=sys.stderr, flush=True)
            if not self.started:
                raise _StopDuringStart

    def wait(self, duration: float | None) -> None:
        """Until a stop signal (or ``duration`` seconds when given)."""
        self.event.wait(duration)


def _bounded(fn: Callable[[], Any], timeout_s: float) -> None:
    """Run ``fn`` on a daemon thread and wait at most ``timeout_s`` for it."""
    worker = threading.Thread(target=fn, daemon=True, name="tenantry-stop")
    worker.start()
    worker.join(timeout_s)


def _stop(handle: Any, node: Any, connected: bool, app_name: str, settings: Any,
          keep_logs: bool) -> None:
    if not connected and node is None:
        return  # stopped before anything started
    import ray

    from engine.serving.launch import ServingHandle

    if handle is None and node is None:
        # Stopped while deploying on a cluster we joined: remove what got deployed.
        handle = ServingHandle("", app_name, settings)
    if handle is not None:
        handle.shutdown()
    _bounded(ray.shutdown, 10.0)
    if node is not None:
        killed = node.stop()
        if killed:
            print(f"tenantry: killed {len(killed)} leftover Ray processes", file=sys.stderr)
        if keep_logs:
            print(f"tenantry: Ray's logs are in {node.temp_dir}", file=sys.stderr)
        else:
            node.remove_temp_dir()


def _serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    signals = _StopSignals()  # first: a stop during the imports below is a clean one too
    handle = node = settings = None
    connected = clean = False
    try:
        from engine.cli.private_ray import PrivateRay
        from engine.serving.directory import NAMESPACE
        from engine.serving.launch import start_serving
        from engine.settings import ServeSettings
        from registry.errors import ValidationError
        from training.cluster import ensure_ray

        settings = ServeSettings.from_env(env, registry=args.registry, host=args.host,
                                          port=args.port, replicas=args.replicas,
                                          cache_mb=args.cache_mb, api_keys_file=args.api_keys,
                                          log_sample=args.log_sample,
                                          allow_anonymous=args.allow_anonymous or None)
        problem = settings.exposure_problem()
        if problem:
            raise ValidationError(problem)
        open_registry(args.registry, env)  # fail fast with a clear message
        storage = storage_options(args.registry, env)
        address = args.address or settings.ray_address or None
        if address is None:
            node = PrivateRay(temp_dir=settings.ray_temp_dir)
            node.start()
            address = node.address
        with signals.held():
            ensure_ray(address, namespace=NAMESPACE)
            connected = True
        handle = start_serving(settings, app_name=args.app_name, address=address,
                               storage_options=storage)
        signals.started = True
        if signals.event.is_set():  # a signal between the start returning and here
            raise _StopDuringStart
        doc = {"url": handle.url, "replicas": settings.replicas, "cache_mb": settings.cache_mb,
               "pid": os.getpid(), "ray_address": address,
               "ray_temp_dir": node.temp_dir if node is not None else None}
        emit(args, doc,
             f"tenantry serving {settings.registry} at {handle.url} with {settings.replicas} "
             f"replicas x {settings.cache_mb:g} MB cache (Ctrl-C to stop)\n"
             f"  try: curl -s {handle.url}/v1/tenants/<tenant>/model ; docs at {handle.url}/docs")
        signals.wait(args.duration)
        clean = True
    except _StopDuringStart:
        clean = True
    finally:
        signals.started = True  # from here on a signal never raises
        began = time.monotonic()
        _stop(handle, node, connected, args.app_name, settings, keep_logs=not clean)
        if signals.signal_name:
            print(f"tenantry: stopped in {time.monotonic() - began:.1f}s", file=sys.stderr,
                  flush=True)
        signals.restore()
    return 0


def _apikey(args: argparse.Namespace, _env: Mapping[str, str]) -> Reply:
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
        return Reply({"tenant_id": tenant, "admin": admin, "revoked": removed,
                      "file": args.file},
                     f"revoked {removed} {what} in {args.file} (running servers stop "
                     "accepting them within a few seconds)")
    key = add_key(args.file, tenant)
    return Reply({"tenant_id": tenant, "admin": args.admin, "key": key, "file": args.file},
                 f"{'admin token' if args.admin else 'API key for ' + str(tenant)}: {key}\n"
                 f"(only its sha256 is stored in {args.file}; this is the only time it is "
                 "shown)")


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
    p.add_argument("--log-sample", type=float, default=None, metavar="F",
                   help="share of each tenant's production requests written to the "
                        "prediction log <registry>/predictions, after its first 5 of each "
                        "hour (default 0.01; 0 turns the log off)")
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
