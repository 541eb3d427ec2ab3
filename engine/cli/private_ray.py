"""The Ray node ``tenantry serve`` starts for itself.

It runs in a session of its own, so that a signal to the command's process group (Ctrl-C,
``timeout``, ``kill -- -PGID``) reaches only the command, which then stops Ray last.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from registry.errors import Unavailable
from training.cluster import NICENESS_ENV, WORKER_NICENESS

__all__ = ["PrivateRay", "session_processes"]

_PR_SET_PDEATHSIG = 1


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
        # Model hosts and HAProxy at normal priority, not Ray's 15 (training.cluster).
        env.setdefault(NICENESS_ENV, str(WORKER_NICENESS))
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
