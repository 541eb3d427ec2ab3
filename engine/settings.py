"""Serving configuration: one typed object from ``TENANTRY_<FIELD>`` variables (read by
:func:`registry.settings.read_env`) and the command's flags."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from registry.settings import env_names, process_env, read_env

__all__ = ["ServeSettings", "is_loopback"]


@dataclass(frozen=True)
class ServeSettings:
    """Everything the ingresses and model-host replicas need to know."""

    registry: str = "./tenantry-data/registry"
    """Registry root (path or ``s3://``); ``TENANTRY_REGISTRY``."""
    host: str = "127.0.0.1"
    """Address every node's ingress (HAProxy) binds; ``auto`` = the node's Ray IP;
    ``TENANTRY_HOST``. A non-loopback address needs API keys or ``allow_anonymous``."""
    port: int = 8080
    """Port every node's ingress binds; ``TENANTRY_PORT``."""
    allow_anonymous: bool = False
    """Serve a non-loopback address without API keys (refused otherwise)."""
    ingress_slots: int = 64
    """Most model-host replicas one ingress routes to (HAProxy server slots)."""
    ingress_threads: int = 1
    """HAProxy threads per ingress (one handles ~10k req/s of small requests)."""
    ingress_max_connections: int = 2048
    """Client connections per ingress; past this, new requests get a 503 ``Overloaded``."""
    ingress_max_body_bytes: int = 1024 * 1024
    """Largest request body (Content-Length) the ingress forwards; larger gets 413."""
    ingress_buffer_bytes: int = 16384
    """HAProxy's buffer: a request head must fit in it less 1 KiB (else 400)."""
    ingress_request_timeout_s: float = 10.0
    """Time a client has to send a whole request, head and body (else 408)."""
    ingress_client_timeout_s: float = 30.0
    """Longest a client connection may stay silent mid-exchange."""
    ingress_server_timeout_s: float = 30.0
    """Longest the ingress waits for a model host's answer (else 504)."""
    ingress_connect_timeout_s: float = 2.0
    """Longest the ingress waits to connect to a model host (then the next one)."""
    ingress_keepalive_timeout_s: float = 10.0
    """Idle time before the ingress closes a client's keep-alive connection."""
    ingress_queue_timeout_s: float = 5.0
    """Longest a request waits for a model host slot when all are busy (else 503)."""
    ingress_server_maxconn: int = 128
    """Concurrent requests the ingress sends one model host; more wait in its queue."""
    ingress_check_interval_ms: int = 500
    """Health-check period of model hosts (two failures, or two refused connections,
    take one out of routing)."""
    replicas: int = 2
    """Number of model-host replicas; ``TENANTRY_REPLICAS``."""
    cache_mb: float = 64.0
    """Model cache budget per replica, in MB of loaded-model memory; ``TENANTRY_CACHE_MB``."""
    replica_host: str = "127.0.0.1"
    """Address replicas bind and advertise; ``auto`` = the Ray node IP (multi-node)."""
    refresh_interval_s: float = 1.0
    """How often replicas refresh their registry snapshot; ``TENANTRY_REFRESH_INTERVAL_S``."""
    heartbeat_interval_s: float = 1.0
    """How often replicas report to the directory; ``TENANTRY_HEARTBEAT_INTERVAL_S``."""
    replica_ttl_s: float = 5.0
    """A replica silent this long loses its slot; ``TENANTRY_REPLICA_TTL_S``."""
    preload_share: float = 0.5
    """Share of the cache budget a starting replica fills with its hottest tenants."""
    load_factor: float = 2.0
    """Bounded-load factor c (HAProxy ``hash-balance-factor`` 100c): a replica takes a
    tenant's request only while its in-flight count is below c x the mean; else the next
    replica on the ring. 1.25 spilled so often at W-serve rates (a handful of requests in
    flight) that the caches held more copies: 2,246 req/s at p99 <= 50 ms vs 3,502 at 2.0."""
    max_rows: int = 1000
    """Most rows accepted in one predict request; ``TENANTRY_MAX_ROWS``."""
    load_threads: int = 4
    """Threads per replica that load models (loads never block cached predictions)."""
    api_keys_file: str = ""
    """JSON file of hashed API keys; empty disables auth; ``TENANTRY_API_KEYS_FILE``."""
    replica_num_cpus: float = 0.0
    """CPUs Ray reserves per model-host replica (0 lets hosts share a small box)."""
    replica_resources: str = ""
    """Custom Ray resources per replica, ``name=amount[,…]`` (e.g. ``serving=1``)."""
    access_log: bool = False
    """Log every request (off: it costs CPU on the hot path)."""
    ray_address: str = ""
    """Ray cluster to join (``TENANTRY_RAY_ADDRESS``, else ``RAY_ADDRESS``); empty starts a
    private local Ray on loopback."""
    shadow_flush_rows: int = 20000
    """Shadow pairs buffered before the pair log is written (also every ``shadow_flush_s``)."""
    shadow_flush_s: float = 10.0
    """Longest a shadow pair waits in memory before it is written to the pair log (each
    write is a Delta commit: fewer, larger ones disturb production less)."""
    shadow_config_refresh_s: float = 1.0
    """How often replicas re-read the shadow configuration table."""
    shadow_cache_mb: float = 64.0
    """Separate byte budget for shadow models (the production cache's class), so shadowing
    never evicts production models; 64 MB holds W-shadow's 10% of 2,000 tenants (~1,000
    models of ~35 KB per replica)."""
    shadow_spool_mb: float = 64.0
    """Largest spool a replica keeps for its shadow worker (mirrored requests not yet
    committed to the pair log); a mirrored request that does not fit is counted dropped."""
    shadow_spool_dir: str = ""
    """Where the node's spools live; empty: ``/dev/shm`` (memory), else the temp dir."""
    shadow_max_age_s: float = 10.0
    """A mirrored request older than this when the worker reaches it is discarded (timeout);
    a worker busy with one batch for longer is considered hung and restarted."""
    shadow_worker: str = "auto"
    """Where shadow predictions run: ``actor`` (a Ray actor process per replica, on its
    node), ``thread`` (inside the replica; no isolation), ``auto`` (actor when in Ray)."""
    shadow_idle_priority: bool = True
    """Run the shadow actor's process under ``SCHED_IDLE``: only CPU production leaves idle."""
    log_sample: float = 0.01
    """Share of each tenant's production requests a replica writes to the prediction log
    ``<registry>/predictions`` (after its first ``log_first_per_hour`` of each hour); 0
    turns the log off entirely; ``TENANTRY_LOG_SAMPLE`` or ``tenantry serve --log-sample``."""
    log_first_per_hour: int = 5
    """Requests of every tenant logged each UTC hour before sampling starts (small tenants
    are seen too)."""
    log_flush_s: float = 10.0
    """Longest a logged row waits in memory before it is written (one Delta commit)."""
    log_flush_rows: int = 5000
    """Logged rows that trigger a write before ``log_flush_s``."""
    log_buffer_rows: int = 20000
    """Most logged rows a replica holds in memory; past it requests are dropped (counted)."""
    shutdown_timeout_s: float = 20.0
    """Longest a model host gets, once told to stop, to finish its in-flight requests and
    have its shadow worker write the pairs it holds (Serve's ``graceful_shutdown_timeout_s``;
    past it Serve kills the replica); ``TENANTRY_SHUTDOWN_TIMEOUT_S``."""
    stale_after_refreshes: float = 5.0
    """A replica whose registry snapshot has not refreshed for this many
    ``refresh_interval_s`` reports ``"stale": true`` on ``/readyz`` (still 200: it serves
    the last snapshot it read)."""
    ray_temp_dir: str = ""
    """Where the private Ray of ``tenantry serve`` keeps its session (sockets, logs); empty:
    a new ``tenantry-ray-*`` directory in the system temp dir, removed after a clean stop."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServeSettings:
        """Defaults, then ``TENANTRY_<FIELD>`` variables (``ray_address``: also
        ``RAY_ADDRESS``), then the non-None ``overrides`` (the command's flags).

        Args:
            environ: the environment ``main`` read (None: this process's).
            overrides: field values that win over the environment; None means unset.

        Raises:
            ValidationError: a variable that does not parse as its field's type.
        """
        values = read_env(cls, env_names(cls, "TENANTRY_"), process_env(environ))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def exposure_problem(self) -> str:
        """Why serving with these settings would be open to the network, or ``""``.

        A non-loopback ingress address (``auto`` included) needs API keys unless
        ``allow_anonymous`` says the operator means it.
        """
        if self.api_keys_file or self.allow_anonymous or is_loopback(self.host):
            return ""
        return (f"refusing to serve on {self.host!r} without API keys: pass --api-keys FILE "
                "(see `tenantry apikey`), bind 127.0.0.1, or pass --allow-anonymous")

    @property
    def cache_bytes(self) -> int:
        """The cache budget in bytes."""
        return int(self.cache_mb * 1024 * 1024)

    def resources(self) -> dict[str, float]:
        """``replica_resources`` parsed into a dict."""
        return _parse_resources(self.replica_resources)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is known to be a loopback address (a name other than
    ``localhost``, or ``auto``, is not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # "auto", a name: not known to be loopback
        return False


def _parse_resources(spec: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, amount = part.partition("=")
        out[name.strip()] = float(amount or 1)
    return out

