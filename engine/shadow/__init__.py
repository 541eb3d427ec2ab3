"""Shadow mode: mirror a sample of production traffic to a shadow version, off the
request path, log every compared pair to Delta and report on them.

``install(state, settings)`` is called by each model host (``engine.serving.app``): it
attaches a :class:`ShadowMirror` as ``state.shadow`` (appending mirrored requests to the
replica's spool, read by its shadow worker, by default a Ray actor process of its own)
and returns the hook that adds the shadow HTTP routes.
``shadow_report`` and :class:`ConfigStore` back ``tenantry shadow``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from fastapi import FastAPI

from engine.serving.api import RouteHook
from engine.serving.auth import KeyStore
from engine.serving.host import ModelHostState
from engine.settings import ServeSettings
from engine.shadow.config import ConfigStore, ConfigWatcher, ShadowConfig, build_config
from engine.shadow.executors import new_executor
from engine.shadow.log import ComparedRequest, PairLog
from engine.shadow.mirror import CLOSE_S, ShadowMirror
from engine.shadow.models import Loader
from engine.shadow.report import ShadowReport, compare, shadow_report
from engine.shadow.routes import add_shadow_routes
from engine.shadow.spool import SpoolWriter, adopt_orphans, default_root
from engine.shadow.tables import ShadowTables
from engine.shadow.worker import ShadowWorker

__all__ = [
    "ComparedRequest", "ConfigStore", "ConfigWatcher", "PairLog", "ShadowConfig",
    "ShadowMirror", "ShadowReport", "ShadowTables", "ShadowWorker", "build_config", "compare",
    "create_mirror", "install", "shadow_report",
]


STOP_MARGIN_S = 3.0  # of a host's shutdown budget, for its HTTP server to stop


def create_mirror(state: ModelHostState, settings: ServeSettings, loader: Loader | None = None,
                  spool_root: Path | None = None) -> tuple[ShadowMirror, ConfigWatcher]:
    """A started mirror (spool, shadow worker, config watcher) for ``state``.

    Spools of dead replicas on this node (for the same registry) are adopted: this
    replica's worker logs what they held.

    Args:
        state: the replica's host state (its snapshot, registry and metrics are used).
        settings: serving settings (the ``shadow_*`` fields).
        loader: how the worker loads shadow models (default: verified from the registry);
            it must pickle when the worker is a Ray actor.
        spool_root: this node's spool directory (default: :func:`default_root`).

    Returns:
        the mirror, already set as ``state.shadow``, and its config watcher.
    """
    tables = ShadowTables.for_registry(state.registry)
    spool = SpoolWriter(spool_root or default_root(state.registry.root, settings.shadow_spool_dir),
                        max_bytes=int(settings.shadow_spool_mb * 2**20))
    adopt_orphans(spool.root, spool.path)
    # On a stop the worker's last pair-log write gets what the host's shutdown budget
    # leaves after the HTTP server stops.
    mirror = ShadowMirror(state.snapshot, state.metrics, spool,
                          partial(new_executor, state.registry.root, settings, spool.path,
                                  loader),
                          close_timeout_s=max(CLOSE_S, settings.shutdown_timeout_s
                                              - STOP_MARGIN_S))
    watcher = ConfigWatcher(ConfigStore(tables), settings.shadow_config_refresh_s,
                            mirror.set_configs)
    try:
        watcher.refresh()
    except Exception:  # noqa: BLE001 - start without configs; the watcher retries
        watcher.errors += 1
    mirror.on_close.append(watcher.stop)
    watcher.start()
    mirror.start()
    state.shadow = mirror
    return mirror, watcher


def install(state: ModelHostState, settings: ServeSettings) -> RouteHook:
    """Attach shadow mode to a model host; returns the hook adding its HTTP routes."""
    mirror, watcher = create_mirror(state, settings)

    def hook(app: FastAPI, host: ModelHostState, keys: KeyStore) -> None:
        add_shadow_routes(app, host, keys, mirror, watcher.store)

    return hook
