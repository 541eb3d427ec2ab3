"""The HAProxy configuration of one node's ingress, rendered from settings.

Requests enter through HAProxy (no tenantry code parses or frames HTTP). The config is
static; which model hosts fill its server slots changes at run time through the runtime
API (:mod:`engine.ingress.runtime`), so a replica joining or leaving never reloads HAProxy.
A restarted HAProxy gets the slots its ingress last applied in its config, in service
from its first request.

Routing: the tenant segment of ``/v1/tenants/{t}/…`` and ``/v2/models/{t}/…`` (the fourth
``/``-separated field) is hashed onto a consistent-hash ring of the slots
(``balance hash``, ``hash-type consistent``) with bounded load (``hash-balance-factor``): a
tenant stays on one replica, a very hot one spills to its next replica, and when one of N
replicas joins or leaves only ~1/N of tenants move. A slot's ring position comes from its
server id, and the directory gives every replica the same slot on every node, so all
ingresses agree on where a tenant lives. Other paths go round robin; ``/healthz`` is
answered by HAProxy itself, ``/readyz`` and ``/metrics`` by the ingress's control app.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from engine.settings import ServeSettings

__all__ = [
    "FRONTEND",
    "HOSTS_BACKEND",
    "SLOT_PREFIX",
    "IngressConfig",
    "SlotTarget",
    "render_config",
    "slot_name",
]

SLOT_PREFIX = "h"
HOSTS_BACKEND = "hosts"
FRONTEND = "tenantry"
_DEFAULTS = ServeSettings()
_RESERVED_REWRITE = 1024  # tune.maxrewrite: buffer space kept for header rewrites
_HEADROOM = 64  # connections past the cap still accepted, to answer them a clear 503


def slot_name(slot: int) -> str:
    """The HAProxy server name of slot ``slot`` (1-based)."""
    return f"{SLOT_PREFIX}{slot}"


@dataclass(frozen=True, slots=True)
class SlotTarget:
    """The model host a slot should point at."""

    host: str
    port: int


@dataclass(frozen=True)
class IngressConfig:
    """What the rendered configuration needs (see :class:`engine.settings.ServeSettings`)."""

    bind_host: str
    bind_port: int
    socket_path: str
    control_port: int
    # Defaults are the serving settings' own (ServeSettings.ingress_*), defined once there.
    slots: int = _DEFAULTS.ingress_slots
    threads: int = _DEFAULTS.ingress_threads
    balance_factor: float = _DEFAULTS.load_factor
    max_connections: int = _DEFAULTS.ingress_max_connections
    max_body_bytes: int = _DEFAULTS.ingress_max_body_bytes
    buffer_bytes: int = _DEFAULTS.ingress_buffer_bytes
    request_timeout_s: float = _DEFAULTS.ingress_request_timeout_s
    client_timeout_s: float = _DEFAULTS.ingress_client_timeout_s
    server_timeout_s: float = _DEFAULTS.ingress_server_timeout_s
    connect_timeout_s: float = _DEFAULTS.ingress_connect_timeout_s
    keepalive_timeout_s: float = _DEFAULTS.ingress_keepalive_timeout_s
    queue_timeout_s: float = _DEFAULTS.ingress_queue_timeout_s
    server_maxconn: int = _DEFAULTS.ingress_server_maxconn
    check_interval_ms: int = _DEFAULTS.ingress_check_interval_ms

    @classmethod
    def from_settings(cls, settings: ServeSettings, bind_host: str, socket_path: str,
                      control_port: int) -> IngressConfig:
        """The HAProxy settings of an ingress, from the serving settings."""
        return cls(
            bind_host=bind_host, bind_port=settings.port, socket_path=socket_path,
            control_port=control_port, slots=settings.ingress_slots,
            threads=settings.ingress_threads, balance_factor=settings.load_factor,
            max_connections=settings.ingress_max_connections,
            max_body_bytes=settings.ingress_max_body_bytes,
            buffer_bytes=settings.ingress_buffer_bytes,
            request_timeout_s=settings.ingress_request_timeout_s,
            client_timeout_s=settings.ingress_client_timeout_s,
            server_timeout_s=settings.ingress_server_timeout_s,
            connect_timeout_s=settings.ingress_connect_timeout_s,
            keepalive_timeout_s=settings.ingress_keepalive_timeout_s,
            queue_timeout_s=settings.ingress_queue_timeout_s,
            server_maxconn=settings.ingress_server_maxconn,
            check_interval_ms=settings.ingress_check_interval_ms)

    @property
    def max_header_bytes(self) -> int:
        """The largest request head HAProxy accepts (larger ones get 400)."""
        return self.buffer_bytes - _RESERVED_REWRITE


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _json(kind: str, detail: str) -> str:
    """An HAProxy quoted string holding the JSON error body every tenantry route uses."""
    body = json.dumps({"error": kind, "detail": detail})
    return "'" + body.replace("'", "") + "'"


_ERRORS = {
    400: ("BadRequest", "malformed HTTP request"),
    403: ("Forbidden", "request refused by the ingress"),
    408: ("RequestTimeout", "request not received in time"),
    413: ("PayloadTooLarge", "request body over the ingress limit"),
    500: ("InternalError", "ingress error"),
    502: ("ReplicaUnavailable", "model host failed while answering"),
    503: ("ReplicaUnavailable", "no model-host replica is available"),
    504: ("GatewayTimeout", "model host did not answer in time"),
}


def _slots(count: int, filled: Mapping[int, SlotTarget]) -> str:
    """One server line per slot, its id fixed to the slot number (its place on the hash
    ring); a slot in ``filled`` starts in service at its host, the others disabled."""
    lines = []
    for slot in range(1, count + 1):
        target = filled.get(slot)
        where = "127.0.0.1:1 disabled" if target is None else f"{target.host}:{target.port}"
        lines.append(f"    server {slot_name(slot)} {where} id {slot}")
    return "\n".join(lines)


def render_config(cfg: IngressConfig, filled: Mapping[int, SlotTarget] | None = None) -> str:
    """``haproxy.cfg`` for ``cfg``; ``filled`` slots in service from the start."""
    bind = f"[{cfg.bind_host}]" if ":" in cfg.bind_host else cfg.bind_host
    errors = "\n".join(f"    http-error status {code} content-type application/json string "
                       f"{_json(*what)}" for code, what in sorted(_ERRORS.items()))
    check = cfg.check_interval_ms
    return f"""# Generated by tenantry (engine/ingress/config.py); replicas fill slots at run time.
global
    maxconn {cfg.max_connections + _HEADROOM + 16}
    nbthread {cfg.threads}
    stats socket {cfg.socket_path} mode 600 level admin
    tune.bufsize {cfg.buffer_bytes}
    tune.maxrewrite {_RESERVED_REWRITE}
    hard-stop-after {_ms(cfg.client_timeout_s)}

defaults
    mode http
    option redispatch 1
    retries 2
    retry-on conn-failure empty-response
    # Idle host connections serve any client's next request: HAProxy frames every request
    # and response itself, and nothing about a request is bound to its connection.
    http-reuse always
    timeout connect {_ms(cfg.connect_timeout_s)}
    timeout client {_ms(cfg.client_timeout_s)}
    timeout server {_ms(cfg.server_timeout_s)}
    timeout http-request {_ms(cfg.request_timeout_s)}
    timeout http-keep-alive {_ms(cfg.keepalive_timeout_s)}
    timeout queue {_ms(cfg.queue_timeout_s)}
    timeout check {_ms(cfg.connect_timeout_s)}
{errors}

frontend {FRONTEND}
    bind {bind}:{cfg.bind_port}
    maxconn {cfg.max_connections + _HEADROOM}
    http-request return status 503 content-type application/json string {_json("Overloaded", f"over {cfg.max_connections} connections to this ingress; retry later")} if {{ fe_conn gt {cfg.max_connections} }}
    http-request return status 405 content-type application/json hdr allow "GET, HEAD" string {_json("MethodNotAllowed", "/healthz answers GET and HEAD only")} if {{ path /healthz }} !{{ method GET HEAD }}
    http-request return status 200 content-type application/json string '{{"status": "ok"}}' if {{ path /healthz }}
    http-request deny deny_status 411 content-type application/json string {_json("LengthRequired", "chunked request bodies are not accepted: send Content-Length")} if {{ req.hdr(transfer-encoding) -m found }}
    http-request deny deny_status 413 content-type application/json string {_json("PayloadTooLarge", f"request body over {cfg.max_body_bytes} bytes")} if {{ req.hdr_val(content-length) gt {cfg.max_body_bytes} }}
    # Only now wait for the body (up to one buffer) before choosing a host, so a host never
    # waits on a slow upload; the size and framing rules above answer on the head alone.
    http-request wait-for-body time {_ms(cfg.request_timeout_s)} at-least {cfg.buffer_bytes}
    http-request set-var(txn.tenant) path,field(4,/) if {{ path_beg /v1/tenants/ /v2/models/ }}
    use_backend control if {{ path /readyz /metrics }}
    default_backend {HOSTS_BACKEND}

backend {HOSTS_BACKEND}
    balance hash var(txn.tenant)
    hash-type consistent
    hash-balance-factor {max(101, round(cfg.balance_factor * 100))}
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr host tenantry-ingress
    http-check expect status 200
    default-server check inter {check}ms fastinter {max(100, check // 2)}ms downinter {check}ms fall 2 rise 1 weight 64 observe layer4 error-limit 2 on-error mark-down maxconn {cfg.server_maxconn}
{_slots(cfg.slots, filled or {})}

backend control
    server control 127.0.0.1:{cfg.control_port}
"""
