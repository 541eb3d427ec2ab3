"""One request validates its tenant once and resolves its version once; a cache hit
builds no registry row (ModelVersion), so its cost does not grow with the tenant count."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

import registry.ids
from engine.serving.api import answer_predict
from engine.serving.auth import KeyStore
from engine.serving.host import ModelHostState
from engine.serving.v2 import answer_infer
from engine.settings import ServeSettings
from registry import AliasMove, NewVersion, Registry

NAMES = ("amount", "age", "velocity")
ROW = [0.5, -1.0, 2.0]
V1_BODY = json.dumps({"instances": [ROW]}).encode()
V2_BODY = json.dumps({"inputs": [{"name": "input__0", "datatype": "FP32", "shape": [1, 3],
                                  "data": ROW}]}).encode()
HEADERS = {"content-type": "application/json"}


def tiny(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] * (seed + 1) - x[:, 1] > 0).astype(int)
    b = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
                  xgb.DMatrix(x, y, feature_names=list(NAMES)), 4)
    return bytes(b.save_raw("ubj"))


@pytest.fixture()
def state(tmp_path: Path) -> ModelHostState:
    reg = Registry.create(str(tmp_path / "reg"), 2)
    staged = [reg.stage_artifact("acme", tiny(1), "r1")]
    reg.publish("r1", [NewVersion(s, NAMES, {"auc": 0.9}) for s in staged],
                [AliasMove(s.tenant_id, "production", s.version) for s in staged])
    host = ModelHostState(ServeSettings(registry=reg.root), reg)
    host.snapshot.refresh()
    return host


class Counter:
    """Counts calls of a wrapped callable."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.wrapped(*args, **kwargs)


class CountingPattern:
    """TENANT_ID_PATTERN with its fullmatch counted (validate_tenant_id reads it per call)."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.fullmatch = Counter(pattern.fullmatch)


def spies(state: ModelHostState, monkeypatch: pytest.MonkeyPatch
          ) -> tuple[CountingPattern, Counter, Counter]:
    pattern = CountingPattern(registry.ids.TENANT_ID_PATTERN)
    monkeypatch.setattr(registry.ids, "TENANT_ID_PATTERN", pattern)
    resolve = Counter(state.snapshot.resolve_version)
    monkeypatch.setattr(state.snapshot, "resolve_version", resolve)
    rows = Counter(state.snapshot._versions.version_of)
    monkeypatch.setattr(state.snapshot._versions, "version_of", rows)
    return pattern, resolve, rows


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_a_request_validates_once_resolves_once_and_a_hit_builds_no_row(
        state: ModelHostState, monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    async def ask() -> tuple[int, bytes, dict[str, str]]:
        if protocol == "v1":
            return await answer_predict(state, KeyStore(), "acme", HEADERS, V1_BODY)
        return await answer_infer(state, KeyStore(), "acme", None, HEADERS, V2_BODY)

    async def main() -> None:
        first = await ask()  # a miss: the load builds the ModelVersion it needs
        assert first[0] == 200, first
        pattern, resolve, rows = spies(state, monkeypatch)
        second = await ask()
        assert second == first
        assert pattern.fullmatch.calls == 1
        assert resolve.calls == 1
        assert rows.calls == 0  # the cached model carries its ModelVersion
        assert state.metrics.cache_hits._value.get() == 1

    asyncio.run(main())


def test_a_miss_still_loads_the_resolved_version(state: ModelHostState,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        _, resolve, rows = spies(state, monkeypatch)
        pred = await state.predict("acme", V1_BODY)
        assert pred.version == 1 and len(pred.predictions) == 1
        assert resolve.calls == 1
        assert rows.calls >= 1  # the load reads the row: the artifact's path and checksum
        assert state.metrics.cache_misses._value.get() == 1

    asyncio.run(main())
