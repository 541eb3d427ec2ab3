"""The training spec: one YAML or TOML file that says how to train on a user's own table.

:func:`load_spec` validates it with pydantic and reports every problem on its own line,
naming the key (``min_rows.train: input should be greater than or equal to 2 (got -5)``).
:func:`default_spec` is the spec of today's synthetic fraud table, built from
:class:`~training.settings.TrainingSettings`, so ``tenantry train --data PATH`` without a
spec trains exactly as before. Checks that need the table (do the columns exist, are
their types usable) live in :mod:`training.resolve`. docs/training-spec.md lists every key.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from training.errors import InvalidTrainingInput
from training.frame import HoldoutRule

__all__ = [
    "GATE_METRICS", "OBJECTIVES", "FeatureSelection", "GateSpec", "MinRows", "SpecError",
    "TrainingSpec", "XGBoostSpec", "load_spec", "parse_spec",
]

OBJECTIVES: dict[str, str] = {"binary": "binary:logistic", "regression": "reg:squarederror",
                              "multiclass": "multi:softprob"}
"""Spec objective -> XGBoost objective."""
GATE_METRICS: dict[str, tuple[str, ...]] = {"binary": ("auc", "logloss"),
                                            "regression": ("rmse", "mae"),
                                            "multiclass": ("mlogloss", "merror")}
"""Metrics the gate may compare per objective; the first is the default."""
_RESERVED_PARAMS = ("objective", "num_class", "eval_metric", "nthread", "n_jobs", "seed",
                    "random_state", "max_depth", "eta", "learning_rate", "tree_method",
                    "n_estimators", "num_boost_round")
_GLOB = set("*?[")


class SpecError(InvalidTrainingInput):
    """A training spec with mistakes; ``problems`` holds one line per mistake."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"training spec {source} has {len(problems)} {noun}:\n  "
                         + "\n  ".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSelection(_Strict):
    """Feature columns: an explicit list, or include/exclude glob patterns."""

    columns: tuple[str, ...] | None = None
    """Exact column names, in model order."""
    include: tuple[str, ...] = ()
    """Glob patterns (fnmatch) of columns to use, in table order."""
    exclude: tuple[str, ...] = ()
    """Glob patterns of columns to leave out (applied after ``include``)."""

    @model_validator(mode="after")
    def _one_way(self) -> FeatureSelection:
        if self.columns is not None and (self.include or self.exclude):
            raise ValueError("give either a list of columns or include/exclude patterns, "
                             "not both")
        if self.columns is not None:
            if not self.columns:
                raise ValueError("the list of feature columns is empty")
            patterns = [c for c in self.columns if _GLOB & set(c)]
            if patterns:
                raise ValueError(f"{patterns[0]!r} is a pattern; list exact names, or use "
                                 "features: {include: [...]} for patterns")
            dupes = sorted({c for c in self.columns if self.columns.count(c) > 1})
            if dupes:
                raise ValueError(f"column {dupes[0]!r} is listed twice")
        return self


class XGBoostSpec(_Strict):
    """Booster parameters shared by every tenant's model."""

    n_estimators: int = Field(default=50, ge=1)
    max_depth: int = Field(default=5, ge=1)
    learning_rate: float = Field(default=0.3, gt=0)
    tree_method: Literal["hist", "approx"] = "hist"
    nthread: int = Field(default=1, ge=1)
    seed: int = 0
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _not_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        taken = [k for k in value if k in _RESERVED_PARAMS]
        if taken:
            raise ValueError(f"{taken[0]!r} is set by its own spec key (objective, "
                             "xgboost.n_estimators, …), not in xgboost.params")
        return value


class MinRows(_Strict):
    """Per-tenant row thresholds below which the tenant is skipped."""

    train: int = Field(default=50, ge=2)
    holdout: int = Field(default=10, ge=2)


class GateSpec(_Strict):
    """The promotion gate: which holdout metric, and how much worse is still not worse."""

    metric: str | None = None
    tolerance: float = Field(default=0.01, ge=0)
    relative: bool = False


class TrainingSpec(_Strict):
    """A validated training spec (see docs/training-spec.md for every key)."""

    table: str = Field(min_length=1)
    format: Literal["auto", "delta", "parquet"] = "auto"
    tenant_column: str = Field(default="tenant_id", min_length=1)
    time_column: str = Field(default="date", min_length=1)
    label_column: str = Field(default="label", min_length=1)
    features: FeatureSelection = FeatureSelection(include=("*",))
    missing_features: Literal["drop", "keep"] = "drop"
    objective: Literal["binary", "regression", "multiclass"] = "binary"
    num_class: int | None = Field(default=None, ge=2)
    xgboost: XGBoostSpec = XGBoostSpec()
    window_days: int = Field(default=7, ge=2)
    holdout: HoldoutRule = HoldoutRule()
    min_rows: MinRows = MinRows()
    gate: GateSpec = GateSpec()

    @field_validator("features", mode="before")
    @classmethod
    def _features(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return {"columns": value}
        if isinstance(value, str):
            # pydantic turns ValueError (not TypeError) into a validation error with its key
            raise ValueError("expected a list of columns or {include: [...], exclude: [...]}")  # noqa: TRY004
        return value

    @field_validator("holdout", mode="before")
    @classmethod
    def _holdout(cls, value: Any) -> HoldoutRule:
        return _parse_holdout(value)

    @model_validator(mode="after")
    def _consistent(self) -> TrainingSpec:
        problems = []
        columns = {"tenant_column": self.tenant_column, "time_column": self.time_column,
                   "label_column": self.label_column}
        seen: dict[str, str] = {}
        for key, name in columns.items():
            if name in seen:
                problems.append(f"{key}: {name!r} is also the {seen[name]}")
            seen.setdefault(name, key)
        if self.num_class is not None and self.objective != "multiclass":
            problems.append(f"num_class: only for objective multiclass (objective is "
                            f"{self.objective})")
        allowed = GATE_METRICS[self.objective]
        if self.gate.metric is not None and self.gate.metric not in allowed:
            problems.append(f"gate.metric: {self.gate.metric!r} is not a {self.objective} "
                            f"metric (use one of {', '.join(allowed)})")
        if self.holdout.last_n_days and self.holdout.last_n_days >= self.window_days:
            problems.append(f"holdout.last_n_days: {self.holdout.last_n_days} leaves no "
                            f"training day in a window of {self.window_days} days")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def xgb_objective(self) -> str:
        """The XGBoost objective string."""
        return OBJECTIVES[self.objective]

    @property
    def gate_metric(self) -> str:
        """The gate's metric (the objective's default when the spec names none)."""
        return self.gate.metric or GATE_METRICS[self.objective][0]


def _parse_holdout(value: Any) -> HoldoutRule:
    if isinstance(value, HoldoutRule):
        return value
    if value == "last_day" or value == {"last_day": True}:
        return HoldoutRule()
    if isinstance(value, Mapping) and len(value) == 1:
        (key, n), = value.items()
        if key == "last_n_days":
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"last_n_days must be a whole number >= 1 (got {n!r})")
            return HoldoutRule(last_n_days=n)
        if key == "fraction":
            if isinstance(n, bool) or not isinstance(n, (int, float)) or not 0 < n < 1 \
                    or not math.isfinite(n):
                raise ValueError(f"fraction must be a number between 0 and 1 (got {n!r})")
            return HoldoutRule(fraction=float(n))
    raise ValueError(f"expected last_day, {{last_n_days: N}} or {{fraction: F}} (got {value!r})")


def _problem(err: Mapping[str, Any]) -> list[str]:
    loc = ""
    for part in err["loc"]:
        loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
    msg = str(err["msg"]).removeprefix("Value error, ")
    kind = err["type"]
    if kind == "extra_forbidden":
        return [f"{loc}: unknown key"]
    if kind == "missing":
        return [f"{loc}: required key is missing"]
    lines = msg.splitlines() or [msg]
    got = err.get("input")
    suffix = f" (got {got!r})" if kind not in ("value_error", "model_type") and \
        not isinstance(got, (dict, list)) else ""
    lines = [line[:1].lower() + line[1:] for line in lines]
    if kind == "value_error" and err["loc"] == ():
        return lines  # cross-key checks already name their key
    return [f"{loc or 'spec'}: {line}{suffix}" for line in lines]


def parse_spec(doc: Any, source: str = "<spec>", base_dir: str | None = None) -> TrainingSpec:
    """Validate a spec document (the parsed YAML/TOML).

    Args:
        doc: the parsed document (a mapping).
        source: how to name the spec in errors.
        base_dir: relative ``table`` paths are resolved against it (the spec file's folder).

    Returns:
        The :class:`TrainingSpec`.

    Raises:
        SpecError: one line per problem.
    """
    if not isinstance(doc, Mapping):
        raise SpecError(source, ["spec: expected a mapping of keys (table, tenant_column, …)"])
    try:
        spec = TrainingSpec.model_validate(dict(doc))
    except ValidationError as exc:
        raise SpecError(source, [line for err in exc.errors() for line in _problem(err)]) \
            from None
    if base_dir and "://" not in spec.table and not os.path.isabs(spec.table):
        spec = spec.model_copy(update={"table": os.path.normpath(os.path.join(base_dir,
                                                                               spec.table))})
    return spec


def load_spec(path: str, overrides: Mapping[str, Any] | None = None) -> TrainingSpec:
    """Read and validate a spec file (``.toml`` is TOML; anything else is YAML).

    Args:
        path: the file.
        overrides: dotted keys set before validation (``{"gate.tolerance": 0.02}``: CLI
            flags over the file), checked like the file's own keys.

    Returns:
        The :class:`TrainingSpec`; a relative ``table`` is resolved against the file's folder.

    Raises:
        SpecError: the file is unreadable, not YAML/TOML, or has mistakes (one line each).
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise SpecError(path, [f"spec: cannot read the file ({exc.strerror})"]) from None
    try:
        if path.endswith(".toml"):
            doc: Any = tomllib.loads(raw.decode("utf-8"))
        else:
            import yaml

            doc = yaml.safe_load(raw)
    except Exception as exc:  # noqa: BLE001 - yaml/toml/unicode errors all mean "not parseable"
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise SpecError(path, [(f"spec: not valid {'TOML' if path.endswith('.toml') else 'YAML'}"
                               f" ({first})")]) from None
    if isinstance(doc, dict):
        for dotted, value in (overrides or {}).items():
            node = doc
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {}) if isinstance(node.get(key, {}), dict) else {}
            node[leaf] = value
    return parse_spec(doc, path, os.path.dirname(os.path.abspath(path)))
