"""Joining Ray, and the Ray Data settings of tenantry's bucket jobs (training, scoring,
monitoring): the one place below the engine that starts Ray, so the serving launch, the
batch and monitoring jobs and the nightly training all join it the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["NICENESS_ENV", "WORKER_NICENESS", "ensure_ray", "quiet_unthrottled_data_context",
           "worker_niceness_config"]

_BACKPRESSURE_KEY = "backpressure_policies.enabled"
_AUTH_MODE = "RAY_AUTH_MODE"
_PROGRESS_LOGGER = "ray.data._internal.progress"
_PROGRESS_NOTICE = "Progress bars disabled."

NICENESS_ENV = "RAY_worker_niceness"
WORKER_NICENESS = 0
"""Niceness of the workers of a Ray that tenantry starts (Ray's own default is 15).

Model hosts and the HAProxy their ingress starts are Ray workers: at Ray's niceness 15
(CFS weight 36) the shadow worker at ``SCHED_IDLE`` (weight 3) takes up to 1/13 of a core
they wait for; at 0 (weight 1024), 1/342. W-shadow's p99 ratio went from 1.13-1.20 to
1.01 with this alone (benchmarks/README.md). A niceness the user set is kept."""


def ensure_ray(address: str | None = None, num_cpus: int | None = None,
               namespace: str | None = None) -> None:
    """Join the Ray at ``address``, or start a private one bound to loopback, unless this
    process is already connected (tests, notebooks).

    Args:
        address: a running cluster; None starts a private Ray for this process.
        num_cpus: CPUs of a private Ray (default: the machine's).
        namespace: the Ray namespace (serving's named actors live in their own).
    """
    import ray

    if ray.is_initialized():
        return
    if address:
        # Quiet: "Connecting to existing Ray cluster" reads as a mistake when the cluster is
        # the private node `tenantry serve` has just started; failures still raise.
        ray.init(address=address, namespace=namespace, ignore_reinit_error=True,
                 log_to_driver=False, logging_level=logging.WARNING)
        return
    _choose_token_auth()
    # A private Ray stays on loopback. Ray 2.60 replaces 127.0.0.1 with the host's routable
    # address, but keeps the rest of 127.0.0.0/8 (Linux routes all of it to lo).
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, namespace=namespace,
             ignore_reinit_error=True, log_to_driver=False, _node_ip_address="127.0.0.2",
             _system_config=worker_niceness_config() or None)


def worker_niceness_config() -> dict[str, int]:
    """``_system_config`` of a Ray tenantry starts: workers at :data:`WORKER_NICENESS`,
    unless ``RAY_worker_niceness`` is set (then Ray reads that, and this is empty)."""
    return {} if NICENESS_ENV in os.environ else {"worker_niceness": WORKER_NICENESS}


def _choose_token_auth() -> None:
    """Token auth for a private Ray, chosen explicitly.

    Ray turns token auth on by itself for a new local cluster when ``RAY_AUTH_MODE`` is
    unset, and then warns on every start ("Token authentication is enabled … Set
    RAY_AUTH_MODE=disabled to opt out"), which on ``tenantry train`` reads as a problem.
    Choosing the same mode up front starts the same cluster without the notice; a mode the
    user set is left alone.
    """
    if _AUTH_MODE in os.environ:
        return
    os.environ[_AUTH_MODE] = "token"  # Ray's own default, read by Ray's child processes
    # Ray caches its config (the auth mode with it) on first use: reload it, as Ray's own
    # switch to token auth does.
    from ray._raylet import Config  # type: ignore[attr-defined]  # private, no stub

    Config.initialize("")


class _DropProgressNotice(logging.Filter):
    """Drops Ray Data's "Progress bars disabled" notice: tenantry turns its bars off on
    purpose and shows its own progress. Every other record of that logger passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_PROGRESS_NOTICE)


_NOTICE_FILTER = _DropProgressNotice()


@contextmanager
def quiet_unthrottled_data_context() -> Iterator[None]:
    """Ray Data settings for a bucket job, restored afterwards.

    Backpressure protects the object store from large block outputs; a bucket returns a few
    KB of metadata, so it buys nothing here, and with it Ray Data runs a single task until
    the first finishes (to learn output sizes) -- on 2 CPUs that idles half the machine for
    a whole bucket. Ray Data's progress bars (and its notice that they are off) are
    replaced by tenantry's own display.
    """
    import ray.data

    data_ctx = ray.data.DataContext.get_current()
    saved = (data_ctx.enable_progress_bars, data_ctx.print_on_execution_start,
             data_ctx.enable_auto_log_stats, data_ctx.get_config(_BACKPRESSURE_KEY, None))
    data_ctx.enable_progress_bars = False
    data_ctx.print_on_execution_start = False
    data_ctx.enable_auto_log_stats = False
    data_ctx.set_config(_BACKPRESSURE_KEY, [])
    progress_log = logging.getLogger(_PROGRESS_LOGGER)
    progress_log.addFilter(_NOTICE_FILTER)
    try:
        yield
    finally:
        progress_log.removeFilter(_NOTICE_FILTER)
        (data_ctx.enable_progress_bars, data_ctx.print_on_execution_start,
         data_ctx.enable_auto_log_stats) = saved[:3]
        if saved[3] is None:
            data_ctx.remove_config(_BACKPRESSURE_KEY)
        else:
            data_ctx.set_config(_BACKPRESSURE_KEY, saved[3])
