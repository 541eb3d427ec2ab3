"""The shadow worker: predicts mirrored requests with shadow models and logs the pairs.

A :class:`ShadowWorker` takes the :class:`~engine.shadow.records.PairRecord` s its pump
(:mod:`engine.shadow.pump`) reads from a replica's spool, predicts each with its shadow
version and buffers the compared pair in its :class:`~engine.shadow.log.PairLog`.
Everything heavy on the shadow side — reading and compiling shadow models, predicting,
writing the pair log to Delta — happens here, in the worker's own process (see
:mod:`engine.shadow.executors`), never on the serving loop of a replica.

:func:`lower_priority` puts the whole worker process under ``SCHED_IDLE``: it only gets
CPU the production processes leave unused.

Per row, the difference is ``|shadow - production|`` for one-output models (binary
probabilities, regression values) and the largest absolute difference over the classes
for multi-class models. A multi-class request is logged as one pair per (row, class):
the pair log's ``row`` is ``row * K + class`` (the report regroups them by K).
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.serving.model import LoadedModel
from engine.shadow.log import ComparedRequest, PairLog
from engine.shadow.models import Loader, ShadowModels
from engine.shadow.records import PairRecord
from registry import ModelVersion, RegistrySnapshot
from registry.errors import NotFound

__all__ = [
    "BatchResult",
    "ShadowWorker",
    "lower_priority",
    "row_diffs",
]


VERSIONS_KEPT = 8192  # version records kept by (tenant, version); a few MB at most


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one batch of records came to."""

    outcomes: dict[str, int]
    abs_diffs: np.ndarray  # one per compared (non-synthetic) row


class ShadowWorker:
    """Shadow models (a byte-budget cache), predictions and the pair log."""

    def __init__(self, log: PairLog, loader: Loader, snapshot: RegistrySnapshot,
                 cache_bytes: int = 16 << 20) -> None:
        self.log = log
        self.models = ShadowModels(cache_bytes, loader)
        self.snapshot = snapshot
        self._versions: dict[tuple[str, int], ModelVersion] = {}
        self.last_error = ""
        self.batches = 0
        # spool, first seq of the group being predicted, monotonic start (the watchdog's)
        self.current: tuple[str, int, float] | None = None

    def _version(self, tenant_id: str, version: int) -> ModelVersion:
        """Metadata of a version (immutable: kept), refreshing the snapshot once for one
        it has not seen."""
        key = (tenant_id, version)
        mv = self._versions.get(key)
        if mv is not None:
            return mv
        try:
            mv = self.snapshot.version(tenant_id, version)
        except NotFound:
            self.snapshot.refresh()
            mv = self.snapshot.version(tenant_id, version)
        if len(self._versions) >= VERSIONS_KEPT:
            self._versions.clear()
        self._versions[key] = mv
        return mv

    def process(self, records: list[PairRecord], spool_id: str = "",
                logged_seq: int = -1) -> BatchResult:
        """Predict every record with its shadow version and buffer the pairs.

        Records of one tenant and versions (and row width) are predicted together, in one
        call: the hot tenant's mirrors of a batch cost one prediction, not one each.

        Args:
            records: mirrored requests, in spool order.
            spool_id: the spool they come from (tags the pair log's commits).
            logged_seq: records up to this seq are in the pair log already (resent after
                a restart): predicted and counted, not logged again.
        """
        outcomes: Counter[str] = Counter()
        diffs: list[np.ndarray] = []
        groups: dict[tuple[str, int, int, int], list[int]] = defaultdict(list)
        for i, rec in enumerate(records):
            key = (rec.tenant_id, rec.shadow_version, rec.production_version, rec.x.shape[1])
            groups[key].append(i)
        results: list[tuple[str, np.ndarray | None, float]] = [("error", None, 0.0)] * len(records)
        for members in groups.values():
            group = [records[i] for i in members]
            self.current = (spool_id, group[0].seq, time.monotonic())
            for i, result in zip(members, self._group(group), strict=True):
                results[i] = result
            self.current = None
        for rec, (outcome, out, latency) in zip(records, results, strict=True):  # spool order
            outcomes[outcome] += 1
            if outcome == "error" and not rec.synthetic:
                self.log.count(rec.tenant_id, rec.shadow_version, outcome, 1, spool_id, rec.seq)
            if outcome != "ok" or out is None:
                continue
            diffs.append(row_diffs(rec.predictions, out))
            if rec.seq > logged_seq:
                self.log.add(ComparedRequest(
                    rec.tenant_id, rec.request_id, rec.production_version, rec.shadow_version,
                    rec.predictions.ravel(), out.ravel(), rec.latency_s, latency, rec.at),
                    spool_id, rec.seq)
        self.batches += 1
        return BatchResult(dict(outcomes),
                           np.concatenate(diffs) if diffs else np.empty(0, np.float64))

    def _group(self, group: list[PairRecord]) -> list[tuple[str, np.ndarray | None, float]]:
        """(outcome, shadow predictions, shadow latency) of each record of one group; the
        latency is the group's prediction time shared by rows."""
        first = group[0]
        tenant = first.tenant_id
        try:
            mv = self._version(tenant, first.shadow_version)
            model = self.models.get(mv)
            x = np.vstack([r.x for r in group]) if len(group) > 1 else first.x
            x = _align(x, self._version(tenant, first.production_version), model)
            started = time.perf_counter()
            out = np.asarray(model.predict(x), dtype=np.float64)
            per_row = (time.perf_counter() - started) / max(1, len(x))
            if out.ndim == 2 and out.shape[1] == 1:
                out = out.reshape(-1)
            if out.shape[:1] != (len(x),):
                raise ValueError(f"shadow returned predictions of shape {list(out.shape)} "
                                 f"for {len(x)} rows")
        except Exception as exc:  # noqa: BLE001 - a broken shadow is an outcome, not a crash
            self._failed(first, exc)
            return [("error", None, 0.0)] * len(group)
        results: list[tuple[str, np.ndarray | None, float]] = []
        start = 0
        for rec in group:
            rows = len(rec.x)
            part, start = out[start:start + rows], start + rows
            if part.shape != rec.predictions.shape:
                self._failed(rec, ValueError(
                    f"shadow returned predictions of shape {list(part.shape)} where "
                    f"production's are {list(rec.predictions.shape)}"))
                results.append(("error", None, 0.0))
            elif rec.synthetic:
                results.append(("synthetic", None, 0.0))  # load-test traffic: never logged
            else:
                results.append(("ok", part, per_row * rows))
        return results

    def _failed(self, rec: PairRecord, exc: Exception) -> None:
        self.last_error = f"{rec.tenant_id}@v{rec.shadow_version}: {type(exc).__name__}: " \
                          f"{exc}"[:500]

    def stats(self) -> dict[str, Any]:
        """Counters of this worker (shown by ``GET /v1/tenants/{t}/shadow``)."""
        return {"pid": os.getpid(), "batches": self.batches, "shadow_models": len(self.models),
                "shadow_model_loads": self.models.loads,
                "buffered_pairs": self.log.buffered_rows, "written_pairs": self.log.written_rows,
                "log_write_errors": self.log.write_errors, "priority": _policy_name()}


def lower_priority() -> bool:
    """Move every thread of this process to ``SCHED_IDLE`` (only idle CPU); False if refused.

    Threads started later inherit the policy from the thread that starts them.
    """
    if not hasattr(os, "SCHED_IDLE"):
        return False
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        tids = ["0"]
    for tid in tids:
        try:
            os.sched_setscheduler(int(tid), os.SCHED_IDLE, os.sched_param(0))
        except ProcessLookupError:
            continue  # the thread ended meanwhile
        except (OSError, ValueError):
            return False
    return True


def _policy_name() -> str:
    try:
        policy = os.sched_getscheduler(0)
    except (AttributeError, OSError):
        return "unknown"
    return "idle" if policy == getattr(os, "SCHED_IDLE", -1) else "normal"


def row_diffs(production: np.ndarray, shadow: np.ndarray) -> np.ndarray:
    """Per row, ``|shadow - production|``; for ``(rows, K)`` class probabilities the
    largest absolute difference over the classes."""
    diff = np.abs(np.asarray(shadow, np.float64) - np.asarray(production, np.float64))
    return diff.max(axis=1) if diff.ndim == 2 else diff


def _align(x: np.ndarray, production: ModelVersion, model: LoadedModel) -> np.ndarray:
    """``x`` (production feature order and category codes) as the shadow model takes it.

    Raises:
        ValueError: the shadow model needs features production does not send, or types a
            feature (categorical or numeric) differently.
    """
    names = model.feature_names
    production_names = production.feature_names
    if production_names and tuple(production_names) != tuple(names):
        index = {n: i for i, n in enumerate(production_names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise ValueError(f"shadow model needs features production lacks: {missing[:5]}")
        x = np.ascontiguousarray(x[:, [index[n] for n in names]])
    codes = getattr(model, "category_codes", None) or {}  # test doubles may not carry it
    return _recode(x, names, production, codes) if codes or production.categorical else x


def _recode(x: np.ndarray, names: tuple[str, ...], production: ModelVersion,
            codes: Mapping[int, Mapping[str, int]]) -> np.ndarray:
    """Production's category codes as the shadow model's (its category list may differ:
    a category only one of them knows is missing for the shadow)."""
    shadow_cats = {names[j] for j in codes}
    if production.feature_types and shadow_cats != (production.categorical & set(names)):
        raise ValueError("shadow and production models type features differently "
                         f"(categorical: {sorted(shadow_cats)} vs "
                         f"{sorted(production.categorical & set(names))})")
    x = np.array(x, dtype=np.float32, copy=True)
    for j, shadow_codes in codes.items():
        known = production.categories.get(names[j])
        if not known or list(known) == list(shadow_codes):
            continue  # same list (or production's unknown here): same codes
        table = np.array([shadow_codes.get(c, np.nan) for c in known] + [np.nan], np.float32)
        col = x[:, j]
        x[:, j] = table[np.where(np.isnan(col), len(known), col).astype(np.int64)]
    return x
