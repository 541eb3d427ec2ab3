"""Start and stop a tenantry serving app on Ray Serve (used by the CLI, demo, tests, benches).

A stop (:meth:`ServingHandle.shutdown`) goes in the order that loses nothing: every
ingress soft-stops (HAProxy closes its listener, so new connections are refused, and
finishes the requests it holds), then the app is deleted (each model host finishes what it
serves and its shadow worker writes its pairs, within ``shutdown_timeout_s``), then the
ingress and directory actors go. :class:`PrivateRay` is the Ray node ``tenantry serve``
starts for itself, in a session of its own so that a signal to the command's process group
(Ctrl-C, ``timeout``, ``kill -- -PGID``) reaches only the command, which then stops Ray last.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ray
from ray import serve

from engine.ingress.node import find_ingresses
from engine.serving.app import DEFAULT_APP_NAME, build_app
from engine.serving.directory import NAMESPACE, directory_name
from engine.settings import ServeSettings
from registry.errors import Unavailable

__all__ = [
    "PrivateRay",
    "ServingHandle",
    "delete_app",
    "ensure_ray",
    "public_url",
    "session_processes",
    "start_serving",
    "stop_ingresses",
    "wait_ready",
]

_PR_SET_PDEATHSIG = 1
DELETE_MARGIN_S = 5.0  # on top of shutdown_timeout_s, for Serve to notice and report


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` or start a local Ray bound to loopback, once per process."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    else:
        # A private Ray stays on loopback. Ray 2.60 replaces 127.0.0.1 with the host's
        # routable address, but keeps the rest of 127.0.0.0/8 (Linux routes all of it to lo).
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.2", namespace=NAMESPACE)


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


def stop_ingresses(app_name: str) -> None:
    """Soft-stop every node's ingress of the app and remove their actors."""
    actors = list(find_ingresses(app_name).values())
    _soft_stop(actors)
    for actor in actors:
        _kill(actor)


def public_url(settings: ServeSettings) -> str:
    """The URL of this node's ingress as a local client reaches it."""
    host = settings.host
    if host == "auto":
        host = ray.util.get_node_ip_address()
    elif host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{settings.port}"


def start_serving(settings: ServeSettings, app_name: str = DEFAULT_APP_NAME,
                  address: str | None = None, timeout_s: float = 180.0) -> ServingHandle:
    """Deploy ``settings.replicas`` model hosts (each node's ingress comes with them);
    return once the local ingress routes to all of them.

    Raises:
        ValueError: the settings would expose predictions without API keys.
        Unavailable: not ready within ``timeout_s``.
    """
    problem = settings.exposure_problem()
    if problem:
        raise ValueError(problem)
    ensure_ray(address or settings.ray_address or None)
    serve.start(proxy_location="Disabled")
    args: dict[str, Any] = asdict(settings)
    args["app_name"] = app_name
    serve.run(build_app(args), name=app_name, route_prefix=None, blocking=False)
    url = public_url(settings)
    wait_ready(url, settings.replicas, timeout_s)
    return ServingHandle(url, app_name, settings)



# Waits for end-of-file on stdin (its parent closed the pipe or died), then SIGKILLs every
# process of session argv[1]. Self-contained: it starts in milliseconds, without Ray.
_REAPER = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.stdin.buffer.read()
sid = int(sys.argv[1])
for _ in range(3):
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            if int(stat[stat.rindex(")") + 2:].split()[3]) == sid:
                os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            pass
"""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def session_processes(sid: int) -> list[int]:
    """Pids of the processes in session ``sid`` (Linux ``/proc``)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces) start after the last ')'.
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


class PrivateRay:
    """A single-node Ray for one ``tenantry serve``, in a session of its own.

    ``ray start --head --block`` runs as a child in a new session, so its processes (GCS,
    raylet, workers, the HAProxy they start) never see a signal sent to this process's
    group; the command decides when they stop. :meth:`stop` ends the node, then SIGKILLs
    whatever is left in its session. If the command is killed instead, ``ray start`` dies
    with it (``PR_SET_PDEATHSIG``), its GCS and raylet with that, and a small reaper
    process sweeps the session of what remains, so no Ray outlives the command.
    """

    def __init__(self, num_cpus: int | None = None, temp_dir: str = "",
                 node_ip: str = "127.0.0.2") -> None:
        # 127.0.0.2: a private Ray stays on loopback (Ray 2.60 rewrites 127.0.0.1 into the
        # host's routable address, not the rest of 127.0.0.0/8).
        self.num_cpus = num_cpus
        self.node_ip = node_ip
        self.owns_temp_dir = not temp_dir
        self.temp_dir = temp_dir or tempfile.mkdtemp(prefix="tenantry-ray-")
        self.address = f"{node_ip}:{_free_port(node_ip)}"
        self.log_path = Path(self.temp_dir) / "ray-start.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.reaper: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> PrivateRay:
        """Start the node and wait until it takes drivers; returns self.

        Raises:
            Unavailable: ``ray start`` failed or was not up in ``timeout_s`` (its output
                says why).
        """
        node_ip = self.node_ip
        cmd = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
               f"--node-ip-address={node_ip}", f"--port={self.address.rsplit(':', 1)[1]}",
               "--include-dashboard=false", "--disable-usage-stats",
               # Ray Client's server would take the fixed port 10001 (one per machine).
               f"--ray-client-server-port={_free_port(node_ip)}",
               f"--temp-dir={self.temp_dir}"]
        if self.num_cpus is not None:
            cmd.append(f"--num-cpus={self.num_cpus}")
        # tenantry drains the app itself before stopping the node: Ray's own drain on
        # SIGTERM would only wait.
        env = {**os.environ, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
        if "RAY_AUTH_MODE" not in os.environ:
            # Token auth, as ray.init() turns on for a local cluster, with a token of this
            # node's own. Left unset, `ray start` turns it on when ~/.ray/auth_token exists
            # but a driver given an address never does, and they cannot talk. Ray reads
            # these from the environment, so this process's must carry them too.
            token = Path(self.temp_dir) / "auth_token"
            token.touch(0o600)
            token.write_text(secrets.token_hex(32))
            auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
            os.environ.update(auth)
            env.update(auth)
            # Ray caches its config (the auth mode with it) on first use: reload it, as
            # Ray's own switch to token auth does.
            from ray._raylet import Config  # type: ignore[attr-defined]  # private, no stub

            Config.initialize("")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True,
                                         # a prctl call only, before any Ray thread
                                         preexec_fn=_die_with_parent)  # noqa: PLW1509
        # Ray's agents outlive a killed raylet: a reaper (a session of its own too) kills
        # whatever is left of the node's session once this process is gone.
        self.reaper = subprocess.Popen([sys.executable, "-c", _REAPER, str(self.proc.pid)],
                                       stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
        address_file = Path(self.temp_dir) / "ray_current_cluster"
        deadline = time.monotonic() + timeout_s
        while not address_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                code = self.proc.poll()
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-1500:]
                raise Unavailable(f"could not start a local Ray (ray start exited with "
                                  f"{code}): {tail.strip()}")
            time.sleep(0.1)
        return self

    def stop(self, timeout_s: float = 10.0) -> list[int]:
        """Stop the node (SIGTERM to ``ray start``, which stops its processes), then
        SIGKILL what is left of its session; returns the pids that had to be killed."""
        if self.proc is None:
            return []
        sid = self.proc.pid  # the session leader's pid is the session id
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout_s)
        left = session_processes(sid)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(5)
        deadline = time.monotonic() + 5.0
        while session_processes(sid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.reaper is not None:
            if self.reaper.stdin is not None:
                self.reaper.stdin.close()  # its sweep finds nothing now; it exits
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.reaper.wait(5)
        return left

    def remove_temp_dir(self) -> None:
        """Delete the session directory if this object created it."""
        if self.owns_temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
