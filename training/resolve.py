"""A spec checked against its table: columns exist, types fit, features resolved.

:func:`resolve` turns a :class:`~training.spec.TrainingSpec` and the table's schema into
what a run needs (:class:`RunPlan`), or raises :class:`~training.spec.SpecError` with one
line per problem (``features[2]: column 'x' not in the table``). Nothing is trained or
staged before this passes.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import pyarrow as pa

from training.features import DATE_COLUMN, SHARD_COLUMN
from training.frame import DataSpec
from training.gate import GateRule
from training.model import ModelSpec
from training.source import Layout, TableSource
from training.spec import SpecError, TrainingSpec
from training.timecol import is_time_type

__all__ = ["RunPlan", "column_kind", "model_spec", "resolve", "select_features"]


@dataclass(frozen=True)
class RunPlan:
    """Everything a run derives from its spec and table."""

    source: TableSource
    data: DataSpec
    model: ModelSpec
    gate: GateRule
    window_days: int
    objective: str
    """The spec's objective name: binary, regression or multiclass."""


def column_kind(t: pa.DataType) -> str | None:
    """``numeric``, ``categorical`` or None (a type no feature may have)."""
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) \
            or pa.types.is_decimal(t):
        return "numeric"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return "categorical"
    return None


def model_spec(spec: TrainingSpec, num_class: int = 0) -> ModelSpec:
    """The per-tenant model settings of a spec.

    Args:
        spec: the spec.
        num_class: classes of a multiclass run (the spec's, or inferred from the labels).
    """
    x = spec.xgboost
    return ModelSpec(n_estimators=x.n_estimators, max_depth=x.max_depth,
                     learning_rate=x.learning_rate, seed=x.seed,
                     min_train_rows=spec.min_rows.train, min_holdout_rows=spec.min_rows.holdout,
                     objective=spec.xgb_objective, num_class=num_class,
                     tree_method=x.tree_method, nthread=x.nthread,
                     params=tuple(sorted(x.params.items())))


def _names(schema: pa.Schema) -> str:
    shown = ", ".join(schema.names[:12])
    return shown + (", …" if len(schema.names) > 12 else "")


def _check_key_columns(spec: TrainingSpec, schema: pa.Schema) -> list[str]:
    problems = []
    for key in ("tenant_column", "time_column", "label_column"):
        name = getattr(spec, key)
        if name not in schema.names:
            problems.append(f"{key}: column {name!r} not in the table (it has: "
                            f"{_names(schema)})")
            continue
        t = schema.field(name).type
        if key == "tenant_column" and not (pa.types.is_integer(t)
                                           or column_kind(t) == "categorical"):
            problems.append(f"tenant_column: column {name!r} has type {t}; tenant ids are "
                            "text or integers")
        elif key == "time_column" and not is_time_type(t):
            problems.append(f"time_column: column {name!r} has type {t}; expected a date, "
                            "a timestamp or ISO 8601 text")
        elif key == "label_column" and column_kind(t) != "numeric":
            problems.append(f"label_column: column {name!r} has type {t}; a {spec.objective} "
                            "label must be numeric")
    return problems


def select_features(spec: TrainingSpec, schema: pa.Schema,
                    layout_columns: set[str]) -> tuple[list[str], list[str]]:
    """The spec's feature columns among ``schema``'s, in model order.

    Args:
        spec: the spec.
        schema: the table's (or an import source's) columns.
        layout_columns: columns no feature may be (``shard``, a ``date`` partition).

    Returns:
        ``(feature names, problems)``: one line per problem, naming the key.
    """
    taken = {spec.tenant_column: "tenant_column", spec.time_column: "time_column",
             spec.label_column: "label_column"}
    taken.update({c: "a layout column of the table" for c in layout_columns})
    sel, problems, out = spec.features, [], []
    if sel.columns is not None:
        absent = [c for c in sel.columns if c not in schema.names and c not in taken]
        if len(absent) > 3:  # a spec written for another table: one line, not dozens
            problems.append(f"features: {len(absent)} of {len(sel.columns)} columns are not in "
                            f"the table ({', '.join(absent[:3])}, …; it has: "
                            f"{_names(schema)})")
        for i, name in enumerate(sel.columns):
            if name in taken:
                role = taken[name]
                problems.append(f"features[{i}]: {name!r} is the {role}" if role.endswith(
                    "column") else f"features[{i}]: {name!r} is {role}")
            elif name not in schema.names:
                if len(absent) <= 3:
                    problems.append(f"features[{i}]: column {name!r} not in the table (it "
                                    f"has: {_names(schema)})")
            elif column_kind(schema.field(name).type) is None:
                problems.append(f"features[{i}]: column {name!r} has type "
                                f"{schema.field(name).type}; features are numeric or "
                                "categorical (text)")
            else:
                out.append(name)
        return out, problems
    for i, pattern in enumerate(sel.include):
        if not any(fnmatch.fnmatchcase(n, pattern) for n in schema.names if n not in taken):
            problems.append(f"features.include[{i}]: pattern {pattern!r} matches no column")
    for name in schema.names:
        if name in taken or not any(fnmatch.fnmatchcase(name, p) for p in sel.include) \
                or any(fnmatch.fnmatchcase(name, p) for p in sel.exclude):
            continue
        if column_kind(schema.field(name).type) is None:
            problems.append(f"features.include: column {name!r} has type "
                            f"{schema.field(name).type}, neither numeric nor categorical; "
                            "add it to features.exclude")
        else:
            out.append(name)
    if not out and not problems:
        problems.append("features: the patterns select no column")
    return out, problems


def resolve(spec: TrainingSpec, source: TableSource, name: str = "<spec>",
            num_class: int | None = None) -> RunPlan:
    """Check ``spec`` against ``source``'s columns and build the :class:`RunPlan`.

    Args:
        spec: the validated spec.
        source: the table it trains on.
        name: how to name the spec in errors (its file).
        num_class: classes of a multiclass run when the spec gives none (inferred by the
            caller from the labels); ignored when the spec gives it.

    Returns:
        The plan.

    Raises:
        SpecError: one line per column problem.
        DataNotFound: the table cannot be read.
    """
    schema = source.schema()
    layout_columns = {SHARD_COLUMN}
    if source.layout is Layout.SHARDED and spec.time_column != DATE_COLUMN:
        layout_columns.add(DATE_COLUMN)
    problems = _check_key_columns(spec, schema)
    features, more = select_features(spec, schema, layout_columns)
    problems += more
    if problems:
        raise SpecError(name, problems)
    categorical = frozenset(f for f in features
                            if column_kind(schema.field(f).type) == "categorical")
    data = DataSpec(spec.tenant_column, spec.time_column, spec.label_column, tuple(features),
                    categorical, spec.holdout, spec.missing_features == "drop")
    classes = spec.num_class or (num_class or 0) if spec.objective == "multiclass" else 0
    rule = GateRule(spec.gate_metric, spec.gate.tolerance, spec.gate.relative)
    return RunPlan(source, data, model_spec(spec, classes), rule, spec.window_days,
                   spec.objective)
