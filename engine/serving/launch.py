"""Start and stop a tenantry serving app on Ray Serve (used by the CLI, demo, tests, benches).

A stop (:meth:`ServingHandle.shutdown`) goes in the order that loses nothing: every
ingress soft-stops (HAProxy closes its listener, so new connections are refused, and
finishes the requests it holds), then the app is deleted (each model host finishes what it
serves and its shadow worker writes its pairs, within ``shutdown_timeout_s``), then the
ingress and directory actors go.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import ray
from ray import serve

from engine.ingress.node import find_ingresses
from engine.serving.app import DEFAULT_APP_NAME, build_app
from engine.serving.directory import NAMESPACE, directory_name
from engine.settings import ServeSettings
from registry.errors import Unavailable
from training.cluster import ensure_ray

__all__ = [
    "ServingHandle",
    "delete_app",
    "public_url",
    "start_serving",
    "wait_ready",
]

DELETE_MARGIN_S = 5.0  # on top of shutdown_timeout_s, for Serve to notice and report


def wait_ready(url: str, replicas: int, timeout_s: float = 120.0) -> dict[str, Any]:
    """Poll ``url``/readyz until the ingress routes to ``replicas`` ready replicas.

    Raises:
        Unavailable: not ready within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as resp:
                last = json.loads(resp.read())
                if last.get("replicas", 0) >= replicas:
                    return dict(last)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = exc
        time.sleep(0.2)
    raise Unavailable(f"serving at {url} not ready after {timeout_s:.0f}s (last: {last})")


@dataclass
class ServingHandle:
    """A running app: its URL and how to stop it."""

    url: str
    app_name: str
    settings: ServeSettings

    def shutdown(self) -> None:
        """Stop the app without dropping a request it accepted (Ray keeps running).

        Ingresses soft-stop first (new connections are refused from then on), then the app
        is deleted (each host finishes its requests and flushes its shadow pairs), then the
        ingress and directory actors are removed. Every step is bounded.
        """
        actors = list(find_ingresses(self.app_name).values())
        try:
            _soft_stop(actors)
            delete_app(self.app_name, self.settings.shutdown_timeout_s + DELETE_MARGIN_S)
        finally:
            for actor in actors + list(find_ingresses(self.app_name).values()):
                _kill(actor)
            with contextlib.suppress(ValueError):
                _kill(ray.get_actor(directory_name(self.app_name), namespace=NAMESPACE))


def _soft_stop(actors: list[Any], timeout_s: float = 15.0) -> None:
    # A dead node's ingress cannot answer; it is killed anyway.
    with contextlib.suppress(Exception):
        ray.get([a.stop.remote() for a in actors], timeout=timeout_s)


def _kill(actor: Any) -> None:
    with contextlib.suppress(Exception):  # already gone
        ray.kill(actor, no_restart=True)


def delete_app(app_name: str, timeout_s: float) -> bool:
    """Delete a Serve app and wait (at most ``timeout_s``) until it is gone; True if it is.

    ``serve.delete`` itself waits without a bound (it hung for minutes when Ray's own
    processes were dying under it), so this asks for the deletion and polls.
    """
    try:
        serve.delete(app_name, _blocking=False)
    except Exception:  # noqa: BLE001 - Serve unreachable: nothing more to ask it
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # controller busy: ask again
            if app_name not in serve.status().applications:
                return True
        time.sleep(0.2)
    return False


def public_url(settings: ServeSettings) -> str:
    """The URL of this node's ingress as a local client reaches it."""
    host = settings.host
    if host == "auto":
        host = ray.util.get_node_ip_address()
    elif host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{settings.port}"


class _DropReconnectNotice(logging.Filter):
    """Drops Serve's "Connecting to existing Serve app … New http_options will not be
    applied": serve.run says it of the instance serve.start (proxy disabled, as meant)
    started a moment before."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Connecting to existing Serve app")


@contextlib.contextmanager
def _without_reconnect_notice() -> Iterator[None]:
    serve_logger = logging.getLogger("ray.serve")
    notice = _DropReconnectNotice()
    serve_logger.addFilter(notice)
    try:
        yield
    finally:
        serve_logger.removeFilter(notice)


def start_serving(settings: ServeSettings, app_name: str = DEFAULT_APP_NAME,
                  address: str | None = None, timeout_s: float = 180.0,
                  storage_options: Mapping[str, str] | None = None) -> ServingHandle:
    """Deploy ``settings.replicas`` model hosts (each node's ingress comes with them);
    return once the local ingress routes to all of them. ``storage_options`` reach an
    object-store registry (none: a local one).

    Raises:
        ValueError: the settings would expose predictions without API keys.
        Unavailable: not ready within ``timeout_s``.
    """
    problem = settings.exposure_problem()
    if problem:
        raise ValueError(problem)
    ensure_ray(address or settings.ray_address or None, namespace=NAMESPACE)
    serve.start(proxy_location="Disabled")
    args: dict[str, Any] = asdict(settings)
    args["app_name"] = app_name
    args["storage_options"] = dict(storage_options or {})
    with _without_reconnect_notice():
        serve.run(build_app(args), name=app_name, route_prefix=None, blocking=False)
    url = public_url(settings)
    wait_ready(url, settings.replicas, timeout_s)
    return ServingHandle(url, app_name, settings)
