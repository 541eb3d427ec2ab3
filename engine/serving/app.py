"""The Ray Serve application: a ``Router`` deployment in front of ``ModelHost`` replicas.

Both deployments answer HTTP on their own servers (no Serve proxy on the request path):
the router on the public port, each model host on a free port it advertises through the
directory actor. Serve still owns their lifecycle: placement, health checks, restarts,
scaling (``num_replicas``) and ``serve deploy`` from a config file, whose
``import_path`` is ``engine.serving.app:build_app``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import asdict
from typing import Any

import ray
from ray import serve

from engine.metrics import Metrics
from engine.serving.api import RouteHook, create_app
from engine.serving.auth import KeyStore
from engine.serving.directory import Endpoint, find_directory, get_or_create_directory
from engine.serving.hashring import rendezvous_order
from engine.serving.host import ModelHostState
from engine.serving.proxy import serve_http
from engine.serving.router import RayDirectoryClient, RouterCore
from engine.serving.server import ThreadedServer, _new_loop
from engine.settings import ServeSettings
from registry import Registry

__all__ = ["ModelHost", "Router", "build_app", "DEFAULT_APP_NAME"]

DEFAULT_APP_NAME = "tenantry"


def _extra_routes(settings: ServeSettings) -> tuple[list[RouteHook], Any]:
    """Shadow mode's routes and hook factory, when that part of tenantry is installed."""
    try:
        from engine.shadow import install  # noqa: PLC0415 - optional part
    except ModuleNotFoundError:
        return [], None
    return [], install


@serve.deployment(name="ModelHost", health_check_period_s=2, health_check_timeout_s=10,
                  graceful_shutdown_timeout_s=5, max_ongoing_requests=8)
class ModelHost:
    """One model-host replica: snapshot, LRU cache and the HTTP API on its own port."""

    def __init__(self, settings: dict[str, Any], app_name: str = DEFAULT_APP_NAME) -> None:
        self.settings = ServeSettings(**settings)
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.state = ModelHostState(self.settings, Registry.open(self.settings.registry))
        hooks, install = _extra_routes(self.settings)
        if install is not None:
            hooks.append(install(self.state, self.settings))
        app = create_app(self.state, KeyStore.load(self.settings.api_keys_file), hooks)
        host = self.settings.replica_host
        if host == "auto":
            host = ray.util.get_node_ip_address()
        self.app_name = app_name
        self.directory: Any = None  # the router creates it; found by the first heartbeat
        self.server = ThreadedServer(app, host, 0, on_start=self._on_start,
                                     name=f"tenantry-host-{self.replica_id}",
                                     access_log=self.settings.access_log)
        self.port = self.server.start()
        self.endpoint = Endpoint(self.replica_id, host, self.port, time.time())

    async def _on_start(self) -> None:
        loop = asyncio.get_running_loop()
        self.state.start_refresher()
        loop.create_task(self._heartbeats())

    async def _heartbeats(self) -> None:
        while getattr(self, "endpoint", None) is None:  # set once start() returns
            await asyncio.sleep(0.01)
        first = True
        while True:
            stats = self.state.stats()
            ep = Endpoint(self.endpoint.replica_id, self.endpoint.host, self.endpoint.port,
                          self.endpoint.started_at, stats["models"], stats["bytes"])
            try:
                if self.directory is None:
                    self.directory = find_directory(self.app_name)
                if self.directory is None:
                    await asyncio.sleep(0.2)
                    continue
                await self.directory.heartbeat.remote(ep)
                if first:
                    first = False
                    asyncio.get_running_loop().create_task(self._preload())
            except Exception:  # noqa: BLE001 - directory restarting; try again next beat
                pass
            await asyncio.sleep(self.settings.heartbeat_interval_s)

    async def _preload(self) -> None:
        try:
            hot = await self.directory.hot_tenants.remote(5000)
            live = [ep.replica_id for ep in await self.directory.live.remote()]
        except Exception:  # noqa: BLE001 - nothing to preload without the directory
            return
        ids = sorted(set(live) | {self.replica_id})
        mine = [t for t in hot if rendezvous_order(t, ids)[0] == self.replica_id]
        await self.state.preload(mine, int(self.state.cache.budget_bytes *
                                           self.settings.preload_share))

    def info(self) -> dict[str, Any]:
        """Endpoint and cache stats (for tests and operators)."""
        return {"replica_id": self.replica_id, "host": self.endpoint.host,
                "port": self.port, **self.state.stats()}

    def check_health(self) -> None:
        """Serve health check: the HTTP server thread must be alive."""
        if not self.server.alive:
            raise RuntimeError("model-host HTTP server stopped")

    def shutdown(self) -> None:
        """Leave routing, finish in-flight requests, stop the server."""
        try:
            if self.directory is not None:
                self.directory.leave.remote(self.replica_id)
        except Exception:  # noqa: BLE001 - the directory may be gone already
            pass
        self.server.stop()
        self.state.close()

    def __del__(self) -> None:
        # Ray Serve's graceful-shutdown hook is __del__; the work is in shutdown().
        self.shutdown()


@serve.deployment(name="Router", num_replicas=1, ray_actor_options={"num_cpus": 0},
                  health_check_period_s=2, graceful_shutdown_timeout_s=5)
class Router:
    """The public HTTP entry point (see :class:`RouterCore`)."""

    def __init__(self, settings: dict[str, Any], app_name: str = DEFAULT_APP_NAME,
                 hosts: Any = None) -> None:
        self.settings = ServeSettings(**settings)
        self.directory = get_or_create_directory(app_name, self.settings.replica_ttl_s)
        self.core = RouterCore(self.settings, RayDirectoryClient(self.directory), Metrics())
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop = _new_loop()
        self._thread = threading.Thread(target=self._run, name="tenantry-router", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"router failed to start: {self._error!r}")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            try:
                await serve_http(self.core.handle, self.settings.host, self.settings.port)
                await self.core.sync_once()
                self.core.start_background()
            except BaseException as exc:  # noqa: BLE001 - reported to __init__
                self._error = exc
            finally:
                self._ready.set()

        self._loop.run_until_complete(main())
        if self._error is None:
            self._loop.run_forever()

    def info(self) -> dict[str, Any]:
        """Replicas the router routes to."""
        return {"replicas": {rid: ep.address for rid, ep in self.core.endpoints.items()},
                "spills": self.core.balancer.spills}

    def check_health(self) -> None:
        """Serve health check: the router's loop must be running."""
        if not self._thread.is_alive():
            raise RuntimeError("router loop stopped")

    def __del__(self) -> None:
        # Ray Serve's graceful-shutdown hook; stop the loop so the port is released.
        self._loop.call_soon_threadsafe(self._loop.stop)


def build_app(args: dict[str, Any] | None = None) -> Any:
    """The Serve application; ``args`` override :class:`ServeSettings` fields.

    ``args`` may also carry ``app_name`` (default ``tenantry``), which names the
    directory actor so several tenantry apps can share one Ray cluster.
    """
    args = dict(args or {})
    app_name = str(args.pop("app_name", DEFAULT_APP_NAME))
    settings = ServeSettings.from_env(**args)
    sdict = asdict(settings)
    # One OpenMP thread per booster: on a shared box, libgomp's default team (one thread
    # per core, spin-waiting) made a model load ~7x and a 1-row predict ~2x slower.
    actor_opts: dict[str, Any] = {"num_cpus": settings.replica_num_cpus,
                                  "runtime_env": {"env_vars": {"OMP_NUM_THREADS": "1"}}}
    if settings.resources():
        actor_opts["resources"] = settings.resources()
    hosts = ModelHost.options(  # type: ignore[attr-defined]  # @serve.deployment adds it
        num_replicas=settings.replicas, ray_actor_options=actor_opts).bind(sdict, app_name)
    return Router.bind(sdict, app_name, hosts)  # type: ignore[attr-defined]  # Serve adds bind
