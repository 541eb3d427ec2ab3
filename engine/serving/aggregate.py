"""Merge the Prometheus pages of several processes into one.

Counters and histograms add up across replicas; gauges add up too (bytes and models held
across all caches) except those in ``MAX_GAUGES`` (lag: the worst replica counts). Sample
values may be ``+Inf``, ``-Inf`` or ``NaN`` as the text format allows: sums follow IEEE
arithmetic, and a maximum ignores ``NaN`` unless every replica reports it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

from engine.metrics import MAX_GAUGES

__all__ = ["merge_metrics"]


def _fmt_labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return "{" + inner + "}"


def _fmt_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value)}.0"
    return repr(value)


def _max(a: float, b: float) -> float:
    """The larger of two samples; ``NaN`` only when both are (``max`` depends on order)."""
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return max(a, b)


def merge_metrics(pages: Iterable[str]) -> str:
    """One exposition text whose samples are the sums (or max) of ``pages``' samples."""
    families: dict[str, tuple[str, str]] = {}  # name -> (type, help)
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for page in pages:
        for fam in text_string_to_metric_families(page):
            families.setdefault(fam.name, (fam.type, fam.documentation))
            bucket = values.setdefault(fam.name, {})
            use_max = fam.name in MAX_GAUGES
            for s in fam.samples:
                if s.name.endswith("_created"):
                    continue
                key = (s.name, tuple(sorted(s.labels.items())))
                if key in bucket:
                    bucket[key] = _max(bucket[key], s.value) if use_max else bucket[key] + s.value
                else:
                    bucket[key] = s.value
    out: list[str] = []
    for name, (kind, doc) in families.items():
        exposed = f"{name}_total" if kind == "counter" else name
        out.append(f"# HELP {exposed} {doc}")
        out.append(f"# TYPE {exposed} {kind}")
        for (sample, labels), value in values[name].items():
            out.append(f"{sample}{_fmt_labels(labels)} {_fmt_value(value)}")
    return "\n".join(out) + "\n"
