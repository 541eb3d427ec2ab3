"""A bucket's predictions: every (tenant, alias) of the bucket scored in as few passes as
possible.

Models served by a compiled forest (binary and regression gbtrees: nearly all) are
stacked by tree count and walked together over one shared matrix of the bucket's columns
(:mod:`engine.forest.stacked`); the rest (multi-class, categorical, a forest that failed its
self-check) predict per tenant through the model's own predictor, with the tenant's
feature matrix (categorical text coded with the model's categories). Either way the
scores are what serving answers for those rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.batch.columns import BucketColumns
from engine.batch.report import FailureReason, TenantFailure
from engine.forest import CompiledForest, forest_of, stack_forests, walk_stack, widen
from engine.serving.model import LoadedModel

__all__ = ["Request", "Scored", "score_requests"]

Scored = tuple[np.ndarray, np.ndarray] | TenantFailure
"""(float64 scores, NaN where a row cannot be scored; that mask), or why none; scores are
``(rows,)`` or, for a multi-class model, ``(rows, K)``."""


@dataclass(frozen=True)
class Request:
    """One tenant's rows of the bucket, to be scored with one model."""

    tenant_id: str
    alias: str
    model: LoadedModel
    rows: np.ndarray


def score_requests(requests: Sequence[Request], columns: BucketColumns) -> list[Scored]:
    """Score every request (forests stacked, the rest one by one), in order."""
    results: list[Scored | None] = [None] * len(requests)
    walkable: list[tuple[int, CompiledForest]] = []
    for i, req in enumerate(requests):
        forest = forest_of(req.model)
        missing = _missing_column(req, columns) if forest is not None else None
        if forest is not None and missing is None:
            walkable.append((i, forest))
        else:
            results[i] = _mismatch(req, missing) if missing else _score_one(req, columns)
    if walkable:
        stacked = _score_stacked([(requests[i], forest) for i, forest in walkable], columns)
        for (i, _), scored in zip(walkable, stacked, strict=True):
            results[i] = scored
    return results  # type: ignore[return-value]  # every slot is filled above


def _missing_column(req: Request, columns: BucketColumns) -> str | None:
    """Why a model's numeric feature is not a usable column, or None."""
    for name in req.model.feature_names:
        try:
            columns.numeric(name)
        except KeyError as exc:
            return str(exc.args[0])
    return None


def _mismatch(req: Request, why: str) -> TenantFailure:
    model = req.model
    return TenantFailure(req.tenant_id, FailureReason.FEATURE_MISMATCH.value,
                         f"model {model.key} expects {model.n_features} features "
                         f"({', '.join(model.feature_names[:4])}…): {why}",
                         req.alias, len(req.rows))


def _score_one(req: Request, columns: BucketColumns) -> Scored:
    """A model served by its own predictor, on the tenant's feature matrix."""
    model = req.model
    try:
        x = columns.matrix(model.feature_names, req.rows, model.category_codes)
    except KeyError as exc:
        return _mismatch(req, str(exc.args[0]))
    bad = np.isinf(x).any(axis=1)  # serving answers 422 for such a row; here: a null score
    try:
        scores = np.asarray(model.predict(x)).astype(np.float64)
    except Exception as exc:  # noqa: BLE001 - isolate the tenant
        return TenantFailure(req.tenant_id, FailureReason.PREDICT_ERROR.value,
                             f"{type(exc).__name__}: {exc}"[:500], req.alias, len(req.rows))
    scores[bad] = np.nan
    return scores, bad


def _score_stacked(items: Sequence[tuple[Request, CompiledForest]],
                   columns: BucketColumns) -> list[Scored]:
    """Forest models, walked together over one widened matrix of the columns they use."""
    names: dict[str, int] = {}
    for req, _ in items:
        for name in req.model.feature_names:
            names.setdefault(name, len(names))
    x = np.empty((columns.num_rows, max(len(names), 1)), np.float32)
    for name, c in names.items():
        x[:, c] = columns.numeric(name)
    wide = widen(x)
    groups: dict[int, list[int]] = defaultdict(list)  # tree count -> items
    for i, (_, forest) in enumerate(items):
        groups[forest.roots.size].append(i)
    results: list[Scored] = [(np.empty(0), np.empty(0, bool))] * len(items)
    for members in groups.values():
        maps = [np.array([names[n] for n in items[i][0].model.feature_names], np.intp)
                for i in members]
        stack = stack_forests([items[i][1] for i in members], maps, x.shape[1])
        sizes = [len(items[i][0].rows) for i in members]
        rows = np.concatenate([items[i][0].rows for i in members])
        scores = walk_stack(stack, wide, rows, np.repeat(np.arange(len(members)), sizes))
        parts = np.split(scores.astype(np.float64), np.cumsum(sizes)[:-1])
        for i, part in zip(members, parts, strict=True):
            results[i] = _null_inf(items[i][0], columns, part)
    return results


def _null_inf(req: Request, columns: BucketColumns, scores: np.ndarray) -> Scored:
    """Scores with NaN for the rows holding an infinite feature value, and that mask."""
    inf = [n for n in req.model.feature_names if columns.has_inf(n)]
    if not inf:
        return scores, np.zeros(len(scores), bool)
    bad = np.isinf(np.column_stack([columns.numeric(n)[req.rows] for n in inf])).any(axis=1)
    scores[bad] = np.nan
    return scores, bad
