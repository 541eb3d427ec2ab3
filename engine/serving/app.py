"""The Ray Serve application: ``ModelHost`` replicas behind an HAProxy ingress per node.

Each model host answers HTTP on its own server (a free port) and heartbeats it to the
directory actor, which gives it a slot; each node that hosts models runs one ingress
(:mod:`engine.ingress`), started by the first model host there, which routes by tenant
to the slots. No Serve proxy is on the request path. Serve still owns the hosts'
lifecycle: placement, health checks, restarts, scaling (``num_replicas``) and
``serve deploy`` from a config file, whose ``import_path`` is
``engine.serving.app:build_app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import asdict
from typing import Any

import ray
from ray import serve

from engine.ingress.node import ensure_ingress
from engine.monitor.log import attach_prediction_log
from engine.serving.api import RouteHook, create_app
from engine.serving.auth import KeyStore
from engine.serving.directory import Endpoint, get_or_create_directory, head_node_id
from engine.serving.host import ModelHostState
from engine.serving.server import ThreadedServer
from engine.serving.v2 import install_v2
from engine.settings import ServeSettings
from engine.shadow import install as install_shadow
from registry import Registry
from registry.settings import RegistrySettings

__all__ = ["DEFAULT_APP_NAME", "ModelHost", "build_app"]

DEFAULT_APP_NAME = "tenantry"
HELD_REPORT_EVERY = 10  # heartbeats between reports of the tenants a replica holds
INGRESS_CHECK_EVERY = 5  # heartbeats between checks that this node's ingress runs




@serve.deployment(name="ModelHost", health_check_period_s=2, health_check_timeout_s=10,
                  graceful_shutdown_timeout_s=20, graceful_shutdown_wait_loop_s=0.5,
                  max_ongoing_requests=8)
class ModelHost:
    """One model-host replica: snapshot, LRU cache and the HTTP API on its own port."""

    def __init__(self, settings: dict[str, Any], app_name: str = DEFAULT_APP_NAME,
                 storage_options: dict[str, str] | None = None) -> None:
        self.settings = ServeSettings(**settings)
        problem = self.settings.exposure_problem()
        if problem:
            raise ValueError(problem)
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.state = ModelHostState(self.settings,
                                    Registry.open(self.settings.registry, storage_options))
        attach_prediction_log(self.state)  # when log_sample > 0
        hooks: list[RouteHook] = [install_v2, install_shadow(self.state, self.settings)]
        app = create_app(self.state, KeyStore.load(self.settings.api_keys_file), hooks)
        host = self.settings.replica_host
        if host == "auto":
            host = ray.util.get_node_ip_address()
        self.app_name = app_name
        self.slot = 0
        self.directory = get_or_create_directory(app_name, self.settings.replica_ttl_s,
                                                 self.settings.ingress_slots, head_node_id())
        self.ingress = ensure_ingress(app_name, self.settings)
        self.server = ThreadedServer(app, host, 0, on_start=self._on_start,
                                     name=f"tenantry-host-{self.replica_id}",
                                     access_log=self.settings.access_log)
        self.port = self.server.start()
        self.endpoint = Endpoint(self.replica_id, host, self.port, time.time())
        self._stopped = False

    async def _on_start(self) -> None:
        loop = asyncio.get_running_loop()
        self.state.start_refresher()
        loop.create_task(self._heartbeats())

    async def _heartbeats(self) -> None:
        while getattr(self, "endpoint", None) is None:  # set once start() returns
            await asyncio.sleep(0.01)
        beats = 0
        while True:
            stats = self.state.stats()
            ep = Endpoint(self.endpoint.replica_id, self.endpoint.host, self.endpoint.port,
                          self.endpoint.started_at, stats["models"], stats["bytes"])
            # A directory or ingress restarting: the next beat tries again.
            with contextlib.suppress(Exception):
                slot = int(await self.directory.heartbeat.remote(ep))
                if slot and not self.slot:
                    self.slot = slot
                    asyncio.get_running_loop().create_task(self._preload(slot))
                self.slot = slot
                beats += 1
                if slot and beats % HELD_REPORT_EVERY == 0:
                    held = [k.tenant_id for k in reversed(self.state.cache.keys())]
                    await self.directory.report_held.remote(slot, held)
                if beats % INGRESS_CHECK_EVERY == 0:
                    await self._check_ingress()
            await asyncio.sleep(self.settings.heartbeat_interval_s)

    async def _check_ingress(self) -> None:
        """Start this node's ingress again if it is gone (its actor died for good)."""
        try:
            await asyncio.wait_for(self.ingress.info.remote(), 5.0)
        except (ray.exceptions.RayActorError, ValueError):
            self.ingress = ensure_ingress(self.app_name, self.settings)

    async def _preload(self, slot: int) -> None:
        """Load what the previous replica of this slot held (it had the same tenants)."""
        try:
            held = await self.directory.held_tenants.remote(slot)
        except Exception:  # noqa: BLE001 - nothing to preload without the directory
            return
        await self.state.preload(held, int(self.state.cache.budget_bytes *
                                           self.settings.preload_share))

    def info(self) -> dict[str, Any]:
        """Endpoint and cache stats (for tests and operators)."""
        return {"replica_id": self.replica_id, "host": self.endpoint.host,
                "port": self.port, "slot": self.slot, **self.state.stats()}

    def check_health(self) -> None:
        """Serve health check: the HTTP server thread must be alive."""
        if not self.server.alive:
            raise RuntimeError("model-host HTTP server stopped")

    def shutdown(self) -> None:
        """Leave routing, finish in-flight requests, stop the server, then stop background
        work and have the shadow worker write its pairs (idempotent)."""
        if getattr(self, "_stopped", True):  # a constructor that failed set nothing
            return
        self._stopped = True
        with contextlib.suppress(Exception):  # the directory may be gone already
            self.directory.leave.remote(self.replica_id)
        self.server.stop()
        self.state.close()

    def __del__(self) -> None:
        # Ray Serve's graceful-shutdown hook is __del__ (bounded by the deployment's
        # graceful_shutdown_timeout_s = shutdown_timeout_s); the work is in shutdown().
        self.shutdown()


def build_app(args: dict[str, Any] | None = None) -> Any:
    """The Serve application; ``args`` override :class:`ServeSettings` fields.

    ``args`` may also carry ``app_name`` (default ``tenantry``), which names the
    directory actor so several tenantry apps can share one Ray cluster.
    """
    args = dict(args or {})
    app_name = str(args.pop("app_name", DEFAULT_APP_NAME))
    # The Serve entry point (``serve run``/``serve deploy`` import it): it reads this
    # process's environment, once, here; ``args`` win over it.
    environ = dict(os.environ)
    storage = args.pop("storage_options", None)
    settings = ServeSettings.from_env(environ, **args)
    if storage is None:
        storage = RegistrySettings.from_env(environ).storage_options(settings.registry)
    problem = settings.exposure_problem()
    if problem:
        raise ValueError(problem)
    sdict = asdict(settings)
    # One OpenMP thread per booster: on a shared box, libgomp's default team (one thread
    # per core, spin-waiting) made a model load ~7x and a 1-row predict ~2x slower.
    actor_opts: dict[str, Any] = {"num_cpus": settings.replica_num_cpus,
                                  "runtime_env": {"env_vars": {"OMP_NUM_THREADS": "1"}}}
    if settings.resources():
        actor_opts["resources"] = settings.resources()
    # Requests reach hosts through the ingress, not Serve handles, so Serve's wait for
    # ongoing requests is short; the host's own stop (__del__) gets shutdown_timeout_s.
    return ModelHost.options(  # type: ignore[attr-defined]  # @serve.deployment adds it
        num_replicas=settings.replicas, ray_actor_options=actor_opts,
        graceful_shutdown_timeout_s=settings.shutdown_timeout_s,
        graceful_shutdown_wait_loop_s=0.5).bind(sdict, app_name, dict(storage))
