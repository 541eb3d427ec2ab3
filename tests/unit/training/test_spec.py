"""The training spec: parsing, defaults, and one clear line per mistake (no Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.cli import main
from training.features import FEATURE_NAMES
from training.frame import HoldoutRule
from training.generate import default_spec
from training.resolve import resolve
from training.settings import TrainingSettings
from training.source import TableSource
from training.spec import SpecError, load_spec, parse_spec

FULL = """
table: churn-features
format: auto
tenant_column: account
time_column: ts
label_column: churned
features:
  include: ["*"]
  exclude: ["customer_*"]
missing_features: drop
objective: multiclass
num_class: 4
xgboost:
  n_estimators: 20
  max_depth: 4
  learning_rate: 0.1
  tree_method: approx
  nthread: 2
  seed: 7
  params: {min_child_weight: 2, subsample: 0.9}
window_days: 10
holdout: {last_n_days: 2}
min_rows: {train: 30, holdout: 5}
gate: {metric: merror, tolerance: 0.05, relative: true}
"""


def _write(tmp_path: Path, text: str, name: str = "spec.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, text))
    return info.value.problems


def test_a_full_spec_parses_and_resolves_relative_paths(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, FULL))
    assert spec.table == str(tmp_path / "churn-features")
    assert (spec.objective, spec.xgb_objective, spec.num_class) == \
        ("multiclass", "multi:softprob", 4)
    assert spec.features.include == ("*",) and spec.features.exclude == ("customer_*",)
    assert spec.holdout == HoldoutRule(last_n_days=2)
    assert spec.xgboost.params == {"min_child_weight": 2, "subsample": 0.9}
    assert (spec.gate_metric, spec.gate.tolerance, spec.gate.relative) == ("merror", 0.05, True)


def test_toml_and_defaults(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, 'table = "s3://bucket/t"\nfeatures = ["a", "b"]\n'
                                      'objective = "regression"\n', "spec.toml"))
    assert spec.table == "s3://bucket/t"  # object-store URIs are left as they are
    assert spec.features.columns == ("a", "b")
    assert (spec.xgb_objective, spec.gate_metric) == ("reg:squarederror", "rmse")
    x = spec.xgboost
    assert (x.n_estimators, x.max_depth, x.tree_method, x.nthread) == (50, 5, "hist", 1)
    assert spec.holdout == HoldoutRule() and spec.holdout.describe() == "last_day"
    assert (spec.min_rows.train, spec.min_rows.holdout, spec.window_days) == (50, 10, 7)
    assert load_spec(_write(tmp_path, "table: t\nobjective: multiclass\n")).gate_metric == \
        "mlogloss"
    assert load_spec(_write(tmp_path, "table: t\nholdout: {fraction: 0.25}\n")).holdout == \
        HoldoutRule(fraction=0.25)


def test_default_spec_is_todays_training() -> None:
    settings = TrainingSettings(window_days=4, n_estimators=9, max_depth=3, learning_rate=0.2,
                                seed=5, min_train_rows=40, min_holdout_rows=8,
                                auc_tolerance=0.03)
    spec = default_spec("/data/features", settings)
    assert spec.table == "/data/features"
    assert (spec.tenant_column, spec.time_column, spec.label_column) == \
        ("tenant_id", "date", "label")
    assert spec.features.columns == FEATURE_NAMES and spec.missing_features == "keep"
    assert (spec.xgb_objective, spec.gate_metric, spec.gate.tolerance) == \
        ("binary:logistic", "auc", 0.03)
    x = spec.xgboost
    assert (x.n_estimators, x.max_depth, x.learning_rate, x.seed, x.tree_method, x.nthread) == \
        (9, 3, 0.2, 5, "hist", 1)
    assert (spec.window_days, spec.min_rows.train, spec.min_rows.holdout) == (4, 40, 8)
    assert spec.holdout == HoldoutRule()


@pytest.mark.parametrize(("text", "expected"), [
    ("table: t\nobjective: poisson\n",
     "objective: input should be 'binary', 'regression' or 'multiclass' (got 'poisson')"),
    ("table: t\nmin_rows: {train: -5}\n",
     "min_rows.train: input should be greater than or equal to 2 (got -5)"),
    ("table: t\nfeatures: {columns: [a], include: ['b*']}\n",
     "features: give either a list of columns or include/exclude patterns, not both"),
    ("table: t\nfeatures: [a, 'b*']\n",
     ("features: 'b*' is a pattern; list exact names, or use features: {include: [...]} for "
     "patterns")),
    ("table: t\nlabel: y\n", "label: unknown key"),
    ("tenant_column: a\n", "table: required key is missing"),
    ("table: t\nholdout: {last_n_days: 0}\n",
     "holdout: last_n_days must be a whole number >= 1 (got 0)"),
    ("table: t\nholdout: {fraction: 1.5}\n",
     "holdout: fraction must be a number between 0 and 1 (got 1.5)"),
    ("table: t\nholdout: first_day\n",
     "holdout: expected last_day, {last_n_days: N} or {fraction: F} (got 'first_day')"),
    ("table: t\nobjective: regression\ngate: {metric: auc}\n",
     "gate.metric: 'auc' is not a regression metric (use one of rmse, mae)"),
    ("table: t\nnum_class: 3\n", "num_class: only for objective multiclass (objective is binary)"),
    ("table: t\nxgboost: {params: {objective: 'reg:tweedie'}}\n",
     ("xgboost.params: 'objective' is set by its own spec key (objective, xgboost.n_estimators, "
     "…), not in xgboost.params")),
    ("table: t\nlabel_column: account\ntenant_column: account\n",
     "label_column: 'account' is also the tenant_column"),
    ("table: t\nwindow_days: 3\nholdout: {last_n_days: 3}\n",
     "holdout.last_n_days: 3 leaves no training day in a window of 3 days"),
    ("table: t\ngate: {tolerance: -1}\n",
     "gate.tolerance: input should be greater than or equal to 0 (got -1)"),
])
def test_each_mistake_is_one_line_naming_its_key(tmp_path: Path, text: str,
                                                 expected: str) -> None:
    assert _problems(tmp_path, text) == [expected]


def test_several_mistakes_give_one_line_each(tmp_path: Path) -> None:
    problems = _problems(tmp_path, "table: t\nobjective: poisson\nmin_rows: {holdout: 0}\n"
                                   "xgboost: {max_depth: 0, trees: 3}\n")
    assert len(problems) == 4
    assert {p.split(":")[0] for p in problems} == \
        {"objective", "min_rows.holdout", "xgboost.max_depth", "xgboost.trees"}


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read the file"):
        load_spec(str(tmp_path / "missing.yaml"))
    assert _problems(tmp_path, "table: [unclosed\n")[0].startswith("spec: not valid YAML")
    assert _problems(tmp_path, "- a list\n") == [
        "spec: expected a mapping of keys (table, tenant_column, …)"]
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(_write(tmp_path, "table = \n", "bad.toml"))


def test_overrides_are_validated_like_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "table: t\n")
    assert load_spec(path, {"window_days": 3, "gate.tolerance": 0.2}).gate.tolerance == 0.2
    with pytest.raises(SpecError, match="window_days: input should be greater than or equal"):
        load_spec(path, {"window_days": 1})


def _table(tmp_path: Path) -> str:
    n = 6
    path = str(tmp_path / "rows.parquet")
    pq.write_table(pa.table({
        "account": ["a"] * n, "ts": pa.array(np.arange(n) * 86_400_000_000,
                                             pa.timestamp("us", tz="UTC")),
        "churned": [0, 1] * 3, "tenure": np.arange(n, dtype=np.float64),
        "plan": ["x", "y"] * 3, "tags": [[1]] * n, "customer_name": ["n"] * n}), path)
    return path


def test_column_problems_against_the_table(tmp_path: Path) -> None:
    path = _table(tmp_path)
    spec = parse_spec({"table": path, "tenant_column": "account", "time_column": "when",
                       "label_column": "plan", "features": ["tenure", "nope", "tags",
                                                            "account"]})
    with pytest.raises(SpecError) as info:
        resolve(spec, TableSource.open(path, time_column="when"), "s.yaml")
    assert info.value.problems == [
        ("time_column: column 'when' not in the table (it has: account, ts, churned, tenure, "
        "plan, tags, customer_name)"),
        "label_column: column 'plan' has type string; a binary label must be numeric",
        ("features[1]: column 'nope' not in the table (it has: account, ts, churned, tenure, "
        "plan, tags, customer_name)"),
        ("features[2]: column 'tags' has type list<element: int64>; features are numeric or "
        "categorical (text)"),
        "features[3]: 'account' is the tenant_column",
    ]
    assert str(info.value).splitlines()[0] == "training spec s.yaml has 5 problems:"


def test_patterns_pick_numeric_and_text_columns(tmp_path: Path) -> None:
    path = _table(tmp_path)
    base = {"table": path, "tenant_column": "account", "time_column": "ts",
            "label_column": "churned"}
    with pytest.raises(SpecError) as info:
        resolve(parse_spec({**base, "features": {"include": ["*", "zz*"]}}),
                TableSource.open(path, time_column="ts"))
    assert info.value.problems == [
        "features.include[1]: pattern 'zz*' matches no column",
        ("features.include: column 'tags' has type list<element: int64>, neither numeric nor "
        "categorical; add it to features.exclude")]
    plan = resolve(parse_spec({**base, "features": {"include": ["*"],
                                                    "exclude": ["tags", "customer_*"]}}),
                   TableSource.open(path, time_column="ts"))
    assert plan.data.feature_names == ("tenure", "plan")
    assert plan.data.categorical == frozenset({"plan"})
    assert plan.model.objective == "binary:logistic" and plan.gate.metric == "auc"


def test_cli_prints_one_line_per_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    path = _write(tmp_path, "table: t\nobjective: poisson\nmin_rows: {train: -1}\n")
    assert main(["train", "--spec", path, "--registry", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"tenantry: error: training spec {path} has 2 problems:",
        "  objective: input should be 'binary', 'regression' or 'multiclass' (got 'poisson')",
        "  min_rows.train: input should be greater than or equal to 2 (got -1)"]
    assert "Traceback" not in err


def test_the_default_spec_on_another_table_says_to_pass_a_spec(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from registry import Registry

    path = _table(tmp_path)
    root = str(tmp_path / "registry")
    Registry.create(root, num_shards=2)
    assert main(["train", "--data", path, "--registry", root]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("tenantry: error: training spec (the synthetic table's default; for your "
                      "own table pass --spec FILE) has 4 problems:")
    assert err[4].startswith("  features: 20 of 20 columns are not in the table (txn_amount, "
                             "txn_count_7d, txn_count_30d, …; it has: account, ts,")
