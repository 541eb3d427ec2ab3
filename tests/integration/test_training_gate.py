"""The promotion gate both ways, on real runs: a broken day's model waits as shadow."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from registry import Registry
from training import TrainingSettings, run_training
from training.craft import rule_rows
from training.table import write_rows

pytestmark = pytest.mark.usefixtures("ray_session")

DAYS = ("2024-02-01", "2024-02-02", "2024-02-03")
SETTINGS = TrainingSettings(window_days=2, n_estimators=10, max_depth=3, progress=False)


def test_gate_promotes_better_and_shadows_worse(tmp_path: Path) -> None:
    rows = []
    for k, day in enumerate(DAYS):
        # steady: the same clean rule every day -> the new model is as good -> production
        rows.append(rule_rows("steady", day, 120, seed=k, num_shards=4))
        # drifting: the rule moves from feature 0 to feature 1 on day 2 -> the new model,
        # trained after the move, beats production on day 3 -> production
        rows.append(rule_rows("drifting", day, 120, seed=10 + k, num_shards=4,
                              feature=0 if k == 0 else 1))
        # broken: day 2's labels are inverted by an upstream bug; the model trained on it is
        # worse than production on (clean) day 3 -> shadow
        rows.append(rule_rows("broken", day, 120, seed=20 + k, num_shards=4, inverted=k == 1))
    data = str(tmp_path / "features")
    write_rows(data, pa.concat_tables(rows), num_shards=4)
    root = str(tmp_path / "reg")
    Registry.create(root, num_shards=4)

    day2 = run_training(data, root, date=DAYS[1], settings=SETTINGS)
    assert (day2.trained, day2.promoted, day2.shadowed) == (3, 3, 0)  # no production yet
    day3 = run_training(data, root, date=DAYS[2], settings=SETTINGS)
    assert (day3.trained, day3.promoted, day3.shadowed) == (3, 2, 1)

    reg = Registry.open(root)
    broken = reg.get("broken")
    assert broken.production is not None and broken.shadow is not None
    assert (broken.production.version, broken.shadow.version) == (1, 2)
    assert broken.shadow.metrics["auc"] < broken.shadow.metrics["production_auc"] - 0.01
    for tenant in ("steady", "drifting"):
        models = reg.get(tenant)
        assert models.production is not None and models.production.version == 2
        assert models.shadow is None
    drifting = reg.get("drifting").production
    assert drifting is not None
    assert drifting.metrics["auc"] > drifting.metrics["production_auc"] + 0.2
