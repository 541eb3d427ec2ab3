"""The shadow worker: predicts mirrored requests with shadow models and logs the pairs.

A :class:`ShadowWorker` receives :class:`ShadowBatch` es from a replica's
:class:`~engine.shadow.mirror.ShadowMirror` and answers each with a small
:class:`BatchResult` (outcome counts, absolute differences, worker stats) that the replica
turns into its metrics. Everything heavy on the shadow side — reading and compiling
shadow models, predicting, writing the pair log to Delta — happens here, in the worker's
own process (see :mod:`engine.shadow.executors`), never in the replica serving production.

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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.serving.model import LoadedModel
from engine.shadow.log import ComparedRequest, PairLog
from engine.shadow.models import Loader, ShadowModels
from registry import ModelVersion, RegistrySnapshot
from registry.errors import NotFound

__all__ = [
    "WORKER_OUTCOMES",
    "BatchResult",
    "MirrorItem",
    "ShadowBatch",
    "ShadowWorker",
    "lower_priority",
    "row_diffs",
]

WORKER_OUTCOMES = ("ok", "synthetic", "error", "timeout")
DropKey = tuple[str, int, str]  # (tenant_id, shadow version, outcome)


@dataclass(frozen=True, slots=True)
class MirrorItem:
    """A production request queued for the shadow."""

    tenant_id: str
    production: ModelVersion
    shadow: ModelVersion
    x: np.ndarray
    predictions: np.ndarray
    request_id: str
    synthetic: bool
    latency_s: float
    at: float  # epoch seconds when production answered
    enqueued: float  # monotonic seconds, on the replica's clock


@dataclass(frozen=True, slots=True)
class ShadowBatch:
    """Mirrored requests sent to the worker at once, column by column, plus counts to log.

    Columnar so that sending it costs the replica little: a few lists and flat arrays
    instead of one object per request. Versions travel as numbers; the worker looks their
    metadata up in its own registry snapshot. ``budgets[i]`` is how many seconds request
    ``i`` may still wait before the worker reaches it (``shadow_max_age_s`` minus its age
    when sent): the worker's clock starts on arrival, so the two clocks never need to agree.
    """

    tenants: list[str]
    request_ids: list[str]
    versions: np.ndarray  # (n, 2) int64: production, shadow
    synthetic: np.ndarray  # (n,) bool
    latency_s: np.ndarray  # (n,) production latency
    at: np.ndarray  # (n,) epoch seconds when production answered
    budgets: np.ndarray  # (n,)
    shapes: np.ndarray  # (n, 3) int64: rows, features, outputs per row (1, or K classes)
    x: np.ndarray  # every request's rows, flattened and concatenated
    predictions: np.ndarray  # every request's production predictions, flattened, concatenated
    counts: dict[DropKey, int] = field(default_factory=dict)

    @classmethod
    def pack(cls, items: list[MirrorItem], budgets: list[float],
             counts: dict[DropKey, int] | None = None) -> ShadowBatch:
        """One batch of ``items`` (``budgets`` aligned with them)."""
        n = len(items)
        return cls(
            [i.tenant_id for i in items], [i.request_id for i in items],
            np.array([(i.production.version, i.shadow.version) for i in items],
                     np.int64).reshape(n, 2),
            np.array([i.synthetic for i in items], bool),
            np.array([i.latency_s for i in items], np.float64),
            np.array([i.at for i in items], np.float64), np.asarray(budgets, np.float64),
            np.array([(*i.x.shape, _outputs(i.predictions)) for i in items],
                     np.int64).reshape(n, 3),
            np.concatenate([i.x.ravel() for i in items]) if n else np.empty(0),
            np.concatenate([i.predictions.ravel() for i in items]) if n else np.empty(0),
            dict(counts or {}))

    def __len__(self) -> int:
        return len(self.tenants)

    def requests(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(i, x, production predictions)`` of every request, in order; predictions are
        ``(rows,)``, or ``(rows, K)`` for a multi-class model."""
        xo = po = 0
        for i, (rows, width, k) in enumerate(self.shapes.tolist()):
            x = self.x[xo:xo + rows * width].reshape(rows, width)
            p = self.predictions[po:po + rows * k]
            yield i, x, p if k == 1 else p.reshape(rows, k)
            xo += rows * width
            po += rows * k


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What the replica needs back from one batch."""

    outcomes: dict[str, int]
    abs_diffs: np.ndarray  # one per compared (non-synthetic) row
    last_error: str
    stats: dict[str, Any]


class ShadowWorker:
    """Shadow models (their own LRU), predictions and the pair log, for one replica."""

    def __init__(self, log: PairLog, loader: Loader, snapshot: RegistrySnapshot,
                 cache_bytes: int = 16 << 20) -> None:
        self.log = log
        self.models = ShadowModels(cache_bytes, loader)
        self.snapshot = snapshot
        self.last_error = ""
        self.batches = 0

    def start(self) -> ShadowWorker:
        """Start the pair-log flusher; returns self."""
        self.log.start()
        return self

    def _version(self, tenant_id: str, version: int) -> ModelVersion:
        """Metadata of a version, refreshing the snapshot once for one it has not seen."""
        try:
            return self.snapshot.version(tenant_id, version)
        except NotFound:
            self.snapshot.refresh()
            return self.snapshot.version(tenant_id, version)

    def process(self, batch: ShadowBatch) -> BatchResult:
        """Predict every request of ``batch`` with its shadow version and log the pairs."""
        received = time.monotonic()
        outcomes: Counter[str] = Counter()
        diffs: list[np.ndarray] = []
        for (tenant, version, outcome), n in batch.counts.items():
            self.log.count(tenant, version, outcome, n)
        versions = batch.versions.tolist()
        for i, x, predictions in batch.requests():
            tenant, (production, shadow) = batch.tenants[i], versions[i]
            synthetic = bool(batch.synthetic[i])
            if time.monotonic() - received > batch.budgets[i]:
                outcome = "timeout"
            else:
                outcome, diff = self._one(batch, i, x, predictions, production, shadow)
                if diff is not None:
                    diffs.append(diff)
            outcomes[outcome] += 1
            if outcome in ("error", "timeout") and not synthetic:
                self.log.count(tenant, shadow, outcome)
        self.batches += 1
        return BatchResult(dict(outcomes),
                           np.concatenate(diffs) if diffs else np.empty(0, np.float64),
                           self.last_error, self.stats())

    def _one(self, batch: ShadowBatch, i: int, x: np.ndarray, predictions: np.ndarray,
             production: int, shadow: int) -> tuple[str, np.ndarray | None]:
        tenant = batch.tenants[i]
        try:
            mv = self._version(tenant, shadow)
            model = self.models.get(mv)
            x = _align(x, self._version(tenant, production), model)
            started = time.perf_counter()
            out = np.asarray(model.predict(x), dtype=np.float64)
            latency = time.perf_counter() - started
            if out.ndim == 2 and out.shape[1] == 1:
                out = out.reshape(-1)
            if out.shape != predictions.shape:
                raise ValueError(f"shadow returned predictions of shape {list(out.shape)} "
                                 f"where production's are {list(predictions.shape)}")
        except Exception as exc:  # noqa: BLE001 - a broken shadow is an outcome, not a crash
            self.last_error = f"{tenant}@v{shadow}: {type(exc).__name__}: {exc}"[:500]
            return "error", None
        if batch.synthetic[i]:
            return "synthetic", None  # load-test traffic: exercised, never logged
        self.log.add(ComparedRequest(tenant, batch.request_ids[i], production, shadow,
                                     predictions.ravel(), out.ravel(),
                                     float(batch.latency_s[i]), latency, float(batch.at[i])))
        return "ok", row_diffs(predictions, out)

    def stats(self) -> dict[str, Any]:
        """Counters of this worker (shown by ``GET /v1/tenants/{t}/shadow``)."""
        return {"pid": os.getpid(), "batches": self.batches, "shadow_models": len(self.models),
                "shadow_model_loads": self.models.loads,
                "buffered_pairs": self.log.buffered_rows, "written_pairs": self.log.written_rows,
                "log_write_errors": self.log.write_errors, "priority": _policy_name()}

    def flush(self) -> int:
        """Write the buffered pairs now; returns rows written."""
        return self.log.flush()

    def close(self) -> dict[str, Any]:
        """Flush and stop the pair log (idempotent); returns the final stats."""
        self.log.close()
        return self.stats()


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


def _outputs(predictions: np.ndarray) -> int:
    """Outputs per row of a request's predictions: 1, or K class probabilities."""
    return int(predictions.shape[1]) if predictions.ndim == 2 else 1


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
