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
from collections import Counter
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
        self.last_error = ""
        self.batches = 0
        self.current: tuple[str, int, float] | None = None  # spool, seq, monotonic start

    def _version(self, tenant_id: str, version: int) -> ModelVersion:
        """Metadata of a version, refreshing the snapshot once for one it has not seen."""
        try:
            return self.snapshot.version(tenant_id, version)
        except NotFound:
            self.snapshot.refresh()
            return self.snapshot.version(tenant_id, version)

    def process(self, records: list[PairRecord], spool_id: str = "",
                logged_seq: int = -1) -> BatchResult:
        """Predict every record with its shadow version and buffer the pairs.

        Args:
            records: mirrored requests, in spool order.
            spool_id: the spool they come from (tags the pair log's commits).
            logged_seq: records up to this seq are in the pair log already (resent after
                a restart): predicted and counted, not logged again.
        """
        outcomes: Counter[str] = Counter()
        diffs: list[np.ndarray] = []
        for rec in records:
            self.current = (spool_id, rec.seq, time.monotonic())
            outcome, diff = self._one(rec, spool_id, rec.seq <= logged_seq)
            self.current = None
            if diff is not None:
                diffs.append(diff)
            outcomes[outcome] += 1
            if outcome == "error" and not rec.synthetic:
                self.log.count(rec.tenant_id, rec.shadow_version, outcome, 1, spool_id,
                               rec.seq)
        self.batches += 1
        return BatchResult(dict(outcomes),
                           np.concatenate(diffs) if diffs else np.empty(0, np.float64))

    def _one(self, rec: PairRecord, spool_id: str,
             logged: bool) -> tuple[str, np.ndarray | None]:
        tenant, predictions = rec.tenant_id, rec.predictions
        try:
            mv = self._version(tenant, rec.shadow_version)
            model = self.models.get(mv)
            x = _align(rec.x, self._version(tenant, rec.production_version), model)
            started = time.perf_counter()
            out = np.asarray(model.predict(x), dtype=np.float64)
            latency = time.perf_counter() - started
            if out.ndim == 2 and out.shape[1] == 1:
                out = out.reshape(-1)
            if out.shape != predictions.shape:
                raise ValueError(f"shadow returned predictions of shape {list(out.shape)} "
                                 f"where production's are {list(predictions.shape)}")
        except Exception as exc:  # noqa: BLE001 - a broken shadow is an outcome, not a crash
            self.last_error = f"{tenant}@v{rec.shadow_version}: {type(exc).__name__}: " \
                              f"{exc}"[:500]
            return "error", None
        if rec.synthetic:
            return "synthetic", None  # load-test traffic: exercised, never logged
        if not logged:
            self.log.add(ComparedRequest(tenant, rec.request_id, rec.production_version,
                                         rec.shadow_version, predictions.ravel(), out.ravel(),
                                         rec.latency_s, latency, rec.at), spool_id, rec.seq)
        return "ok", row_diffs(predictions, out)

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
