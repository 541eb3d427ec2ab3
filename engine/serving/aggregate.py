"""Merge the Prometheus pages of several processes into one.

Counters and histograms add up across replicas; gauges add up too (bytes and models held
across all caches) except those in ``MAX_GAUGES`` (lag: the worst replica counts). Sample
values may be ``+Inf``, ``-Inf`` or ``NaN`` as the text format allows: sums follow IEEE
arithmetic, and a maximum ignores ``NaN`` unless every replica reports it.

:func:`merge_metrics` sums the pages it is given. :class:`CarriedCounters` does the same
for pages it knows by source (a replica id) and keeps the totals of counters and
histograms from ever going down: the last values seen from a source that disappears, or
whose counters restart from 0, are carried into the totals. Gauges are never carried.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping

from prometheus_client.parser import text_string_to_metric_families

from engine.metrics import MAX_GAUGES

__all__ = ["CarriedCounters", "merge_metrics"]

Labels = tuple[tuple[str, str], ...]
SampleKey = tuple[str, str, Labels]  # (family, sample name, sorted labels)
Family = tuple[str, str]  # (type, help)
CUMULATIVE = frozenset({"counter", "histogram"})  # families whose samples only grow


def _fmt_labels(labels: Labels) -> str:
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


def _parse(page: str) -> tuple[dict[str, Family], dict[SampleKey, float]]:
    """Families and samples of one exposition text (``_created`` samples dropped)."""
    families: dict[str, Family] = {}
    samples: dict[SampleKey, float] = {}
    for fam in text_string_to_metric_families(page):
        families.setdefault(fam.name, (fam.type, fam.documentation))
        for s in fam.samples:
            if not s.name.endswith("_created"):
                samples[(fam.name, s.name, tuple(sorted(s.labels.items())))] = s.value
    return families, samples


class _Merger:
    """Sums (or maxes) samples of several pages and renders the result."""

    def __init__(self) -> None:
        self.families: dict[str, Family] = {}
        self.values: dict[str, dict[tuple[str, Labels], float]] = {}

    def add(self, families: Mapping[str, Family], samples: Mapping[SampleKey, float]) -> None:
        for name, fam in families.items():
            self.families.setdefault(name, fam)
        for (name, sample, labels), value in samples.items():
            bucket = self.values.setdefault(name, {})
            key = (sample, labels)
            if key not in bucket:
                bucket[key] = value
            elif name in MAX_GAUGES:
                bucket[key] = _max(bucket[key], value)
            else:
                bucket[key] += value

    def render(self) -> str:
        out: list[str] = []
        for name, (kind, doc) in self.families.items():
            exposed = f"{name}_total" if kind == "counter" else name
            out.append(f"# HELP {exposed} {doc}")
            out.append(f"# TYPE {exposed} {kind}")
            for (sample, labels), value in self.values.get(name, {}).items():
                out.append(f"{sample}{_fmt_labels(labels)} {_fmt_value(value)}")
        return "\n".join(out) + "\n"


def merge_metrics(pages: Iterable[str]) -> str:
    """One exposition text whose samples are the sums (or max) of ``pages``' samples."""
    merger = _Merger()
    for page in pages:
        merger.add(*_parse(page))
    return merger.render()


class CarriedCounters:
    """Merges pages by source so that counter and histogram totals never go down.

    Per source (a replica id, or this ingress's own HAProxy) it keeps the last cumulative
    samples seen. A source missing from a merge is *retired*: its last values stay in the
    totals (a source that comes back, e.g. one the directory dropped for a moment, takes
    them back, so nothing is counted twice). A source whose counters went down restarted:
    its previous values are folded into the totals for good. A source listed with an empty
    page (its scrape failed) counts with its last values. Memory is bounded: metric names
    and labels are bounded, and past ``retired_limit`` retired sources the oldest are
    folded (they can no longer come back without being counted again).

    Not thread-safe: call :meth:`merge` from one task at a time.
    """

    def __init__(self, retired_limit: int = 64) -> None:
        self.retired_limit = retired_limit
        self._families: dict[str, Family] = {}  # cumulative families seen
        self._folded: dict[SampleKey, float] = {}  # restarted sources and old retirees
        self._last: dict[str, dict[SampleKey, float]] = {}
        self._retired: OrderedDict[str, dict[SampleKey, float]] = OrderedDict()

    def merge(self, pages: Mapping[str, str], anonymous: Iterable[str] = ()) -> str:
        """The merged page of ``pages`` (source -> page text; ``""``: not scraped now)
        plus the carried totals, plus ``anonymous`` pages summed as they are.

        Args:
            pages: the pages of the sources alive now, by source id.
            anonymous: pages without a known source (not carried when they vanish).

        Returns:
            Prometheus text.
        """
        merger = _Merger()
        for source, page in pages.items():
            try:
                families, samples = _parse(page)
            except ValueError:  # a garbled page counts as a failed scrape
                families, samples = {}, {}
            cumulative = {k: v for k, v in samples.items()
                          if families[k[0]][0] in CUMULATIVE}
            back = self._retired.pop(source, None)
            if back is not None:
                self._last[source] = back
            previous = self._last.get(source)
            if not cumulative:
                if previous:
                    merger.add(self._families, previous)
                continue
            if previous and any(cumulative.get(k, 0.0) < v for k, v in previous.items()):
                self._fold(previous)  # restarted from 0: keep what it had counted
            self._families.update((n, f) for n, f in families.items() if f[0] in CUMULATIVE)
            self._last[source] = cumulative
            merger.add(families, samples)
        for source in [s for s in self._last if s not in pages]:
            self._retired[source] = self._last.pop(source)
        while len(self._retired) > self.retired_limit:
            self._fold(self._retired.popitem(last=False)[1])
        merger.add(self._families, self._folded)
        for carried in self._retired.values():
            merger.add(self._families, carried)
        for page in anonymous:
            merger.add(*_parse(page))
        return merger.render()

    def _fold(self, samples: Mapping[SampleKey, float]) -> None:
        for key, value in samples.items():
            self._folded[key] = self._folded.get(key, 0.0) + value
