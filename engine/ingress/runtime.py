"""HAProxy's runtime API over its local stats socket: fill and empty server slots, read stats.

One command per connection (HAProxy answers and closes); the socket is a Unix socket with
mode 0600 in a private directory, so only this node's ingress process can use it.
"""

from __future__ import annotations

import csv
import io
import socket

from engine.ingress.config import HOSTS_BACKEND, SlotTarget, slot_name

__all__ = ["RuntimeApi", "RuntimeError_", "SlotTarget", "StatRow"]

StatRow = dict[str, str]


class RuntimeError_(Exception):
    """HAProxy refused a runtime command or could not be reached."""




class RuntimeApi:
    """Commands for one HAProxy process's stats socket."""

    def __init__(self, socket_path: str, timeout_s: float = 2.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s

    def command(self, line: str) -> str:
        """Send one command and return HAProxy's whole answer.

        Raises:
            RuntimeError_: the socket cannot be reached.
        """
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout_s)
                sock.connect(self.socket_path)
                sock.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise RuntimeError_(f"HAProxy runtime API at {self.socket_path}: {exc}") from exc
        return b"".join(chunks).decode(errors="replace")

    def _checked(self, line: str) -> None:
        answer = self.command(line).strip()
        # Successful "set server" answers are empty or say what changed.
        if answer and ("No such" in answer or "Require" in answer or "Unknown" in answer
                       or "invalid" in answer.lower()):
            raise RuntimeError_(f"HAProxy refused {line!r}: {answer}")

    def fill(self, slot: int, target: SlotTarget) -> None:
        """Point ``slot`` at ``target`` and put it into service (health checks decide UP)."""
        name = f"{HOSTS_BACKEND}/{slot_name(slot)}"
        self._checked(f"set server {name} addr {target.host} port {target.port}")
        self._checked(f"set server {name} state ready")

    def empty(self, slot: int) -> None:
        """Take ``slot`` out of service (maintenance: not on the hash ring)."""
        self._checked(f"set server {HOSTS_BACKEND}/{slot_name(slot)} state maint")

    def stats(self) -> list[StatRow]:
        """``show stat`` as rows keyed by HAProxy's CSV column names."""
        text = self.command("show stat")
        if not text.startswith("# "):
            raise RuntimeError_(f"unexpected 'show stat' answer: {text[:200]!r}")
        return list(csv.DictReader(io.StringIO(text[2:])))
