"""The ingress of one node: a Ray actor that runs HAProxy and keeps its slots current.

Every model host makes sure its node has one (:func:`ensure_ingress`), so each node that
hosts models has an entry point of its own and there is no single router. The actor

- renders the config and runs HAProxy as its child (:class:`HaproxyProcess`), restarting
  it if it dies with the slots it last applied already in the new config;
- every ``SYNC_INTERVAL_S`` reads the live replicas and their slots from the directory and
  applies the difference through HAProxy's runtime API (no reload, no dropped
  connection); health checks every ``ingress_check_interval_ms`` take a dead host out of
  routing on their own, before the directory notices;
- serves the control app (``/readyz``, ``/metrics``) on a loopback port HAProxy forwards to.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from dataclasses import asdict
from typing import Any

import ray

from engine.ingress.config import IngressConfig, SlotTarget
from engine.ingress.control import ControlSources, create_control_app
from engine.ingress.process import HaproxyProcess
from engine.ingress.runtime import RuntimeError_
from engine.ingress.stats import ingress_page
from engine.serving.directory import NAMESPACE, Endpoint, find_directory
from engine.serving.server import ThreadedServer
from engine.settings import ServeSettings

__all__ = [
    "IngressNode",
    "ensure_ingress",
    "find_ingresses",
    "ingress_name",
]

SYNC_INTERVAL_S = 0.25
STOP_GRACE_S = 10.0  # a soft-stopping HAProxy's time to finish the requests it holds
PREFIX = "tenantry-ingress:"


def ingress_name(app_name: str, node_id: str) -> str:
    """The actor name of an app's ingress on a node."""
    return f"{PREFIX}{app_name}:{node_id}"


class _IngressNode:
    """Actor body (see the module docstring)."""

    def __init__(self, settings: dict[str, Any], app_name: str) -> None:
        self.settings = ServeSettings(**settings)
        self.app_name = app_name
        self.node_id = ray.get_runtime_context().get_node_id()
        host = self.settings.host
        self.bind_host = ray.util.get_node_ip_address() if host == "auto" else host
        self.applied: dict[int, SlotTarget] = {}
        self.sync_errors = 0
        self._empty_since: float | None = None  # when the directory started listing nobody
        self._stop = threading.Event()
        self.control = ThreadedServer(create_control_app(ControlSources(
            self._stats, self._endpoints, self._other_pages)), "127.0.0.1", 0,
            name="tenantry-ingress-control")
        control_port = self.control.start()
        self.proc: HaproxyProcess | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        # HAProxy is started by the supervising thread, which lives as long as the actor:
        # the child's parent-death signal fires when the thread that forked it ends.
        self._thread = threading.Thread(target=self._supervise, args=(control_port,),
                                        name="tenantry-ingress", daemon=True)
        self._thread.start()
        self._started.wait(60)
        if self._error is not None or self.proc is None:
            raise RuntimeError(f"ingress on {self.bind_host}:{self.settings.port} failed to "
                               f"start: {self._error}")

    # -- supervision ----------------------------------------------------------------------
    def _supervise(self, control_port: int) -> None:
        try:
            workdir = tempfile.mkdtemp(prefix="tenantry-ingress-")
            proc = HaproxyProcess(IngressConfig.from_settings(
                self.settings, self.bind_host, f"{workdir}/admin.sock", control_port), workdir)
            proc.start()
            self.proc = proc
        except BaseException as exc:  # noqa: BLE001 - reported by __init__
            self._error = exc
            return
        finally:
            self._started.set()
        directory = None
        while not self._stop.wait(SYNC_INTERVAL_S):
            if not self._revive(proc):
                continue
            try:
                directory = directory or find_directory(self.app_name)
                if directory is not None:
                    live = ray.get(directory.live.remote(), timeout=5)
                    if self._trust(live):
                        self._apply(live)
            except Exception:  # noqa: BLE001 - directory restarting; HAProxy keeps routing
                directory = None
                self.sync_errors += 1
        # The soft stop runs on this thread: HAProxy's parent-death signal fires when the
        # thread that started it ends, which would cut the requests it is finishing.
        proc.stop(STOP_GRACE_S)
        shutil.rmtree(proc.workdir, ignore_errors=True)

    def _revive(self, proc: HaproxyProcess) -> bool:
        """Start HAProxy again if it died, with the slots last applied in its config (a
        new HAProxy routes at once, not after the next sync); False if it did not start."""
        if proc.alive:
            return True
        try:
            proc.start(self.applied)
        except RuntimeError:
            return False
        return True

    def _trust(self, live: list[Endpoint]) -> bool:
        """Whether to apply the directory's answer now.

        A directory that lists no replica while this ingress routes to some has most likely
        just restarted, empty (its actor died): its hosts heartbeat back within a second.
        Emptying every slot meanwhile answered 503 to everyone, so an empty answer is only
        applied once it has lasted ``replica_ttl_s`` (dead hosts fail their health checks
        in the meantime and leave routing on their own).
        """
        if live or not self.applied:
            self._empty_since = None
            return True
        now = time.monotonic()
        if self._empty_since is None:
            self._empty_since = now
        return now - self._empty_since >= self.settings.replica_ttl_s

    def _apply(self, endpoints: list[Endpoint]) -> None:
        assert self.proc is not None
        want = {ep.slot: SlotTarget(ep.host, ep.port) for ep in endpoints
                if 0 < ep.slot <= self.settings.ingress_slots}
        for slot in [s for s in self.applied if s not in want]:
            self.proc.api.empty(slot)
            del self.applied[slot]
        for slot, target in want.items():
            if self.applied.get(slot) != target:
                if slot in self.applied:
                    self.proc.api.empty(slot)
                self.proc.api.fill(slot, target)
                self.applied[slot] = target

    # -- control-app sources ----------------------------------------------------------------
    def _stats(self) -> list[dict[str, str]]:
        if self.proc is None:
            raise RuntimeError_("HAProxy is not running")
        return self.proc.api.stats()

    async def _endpoints(self) -> list[Endpoint]:
        directory = find_directory(self.app_name)
        return [] if directory is None else list(await directory.live.remote())

    async def _other_pages(self) -> list[str]:
        others = [a for name, a in find_ingresses(self.app_name).items()
                  if name != ingress_name(self.app_name, self.node_id)]
        pages = []
        for actor in others:
            with contextlib.suppress(Exception):  # a node going away: its series drop out
                pages.append(str(await actor.page.remote()))
        return pages

    # -- actor methods ------------------------------------------------------------------------
    def page(self) -> str:
        """This ingress's HAProxy counters as Prometheus text."""
        return ingress_page(self._stats())

    def info(self) -> dict[str, Any]:
        """Where it listens, its HAProxy pid and which slots hold which replica."""
        return {"url": f"http://{self.bind_host}:{self.settings.port}",
                "node_id": self.node_id, "pid": self.proc.pid if self.proc else None,
                "starts": self.proc.starts if self.proc else 0,
                "slots": {s: f"{t.host}:{t.port}" for s, t in sorted(self.applied.items())},
                "sync_errors": self.sync_errors, "config": asdict(self.proc.cfg)
                if self.proc else {}}

    def stop(self) -> None:
        """Stop syncing and soft-stop HAProxy: from now on new connections are refused,
        requests it holds finish (at most ``STOP_GRACE_S``); returns when it has exited."""
        self._stop.set()
        self._thread.join(STOP_GRACE_S + 10)
        if self.proc is not None:
            self.proc.stop()  # only if the thread did not get to it
        self.control.stop(2)


# A threaded actor: page/info calls from other processes never wait on each other.
IngressNode = ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=4)(  # type: ignore[call-overload]  # actor option the stubs lack
    _IngressNode)


def find_ingresses(app_name: str) -> dict[str, Any]:
    """The app's ingress actors, by name."""
    prefix = f"{PREFIX}{app_name}:"
    out = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = entry["name"] if isinstance(entry, dict) else entry
        if isinstance(entry, dict) and entry.get("namespace") != NAMESPACE:
            continue
        if str(name).startswith(prefix):
            try:
                out[name] = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                continue
    return out


def ensure_ingress(app_name: str, settings: ServeSettings) -> Any:
    """This node's ingress actor for the app, started if it is not running."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node_id = ray.get_runtime_context().get_node_id()
    return IngressNode.options(
        name=ingress_name(app_name, node_id), namespace=NAMESPACE, get_if_exists=True,
        lifetime="detached",
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote(asdict(settings), app_name)
