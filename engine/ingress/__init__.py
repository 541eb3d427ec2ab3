"""The ingress: HAProxy on every node that hosts models, configured and fed by tenantry.

Package map:

- :mod:`engine.ingress.config`   the HAProxy configuration, rendered from settings (pure)
- :mod:`engine.ingress.runtime`  HAProxy's runtime API (stats socket): server slots, stats
- :mod:`engine.ingress.process`  one supervised HAProxy process
- :mod:`engine.ingress.stats`    HAProxy's counters as tenantry Prometheus series
- :mod:`engine.ingress.control`  the small local app behind ``/readyz`` and ``/metrics``
- :mod:`engine.ingress.node`     the per-node Ray actor tying them together
"""

from engine.ingress.config import IngressConfig, render_config

__all__ = ["IngressConfig", "render_config"]
