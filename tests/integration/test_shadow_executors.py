"""One contract, two shadow executors: the thread (serving without Ray, tests) and the Ray
actor (the default inside Ray) read a replica's spool and log each pair exactly once.

Every test runs against both (a parametrised fixture); the actor uses the session's Ray.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from engine.settings import ServeSettings
from engine.shadow import ShadowTables, shadow_report
from engine.shadow.executors import ShadowExecutor, new_executor
from engine.shadow.records import encode_counts, encode_pair
from engine.shadow.spool import SpoolWriter
from engine.shadow.tables import PAIRS
from registry import Registry
from tests.conftest import (
    DEFAULT_FEATURES,
    load_booster,
    publish_models,
    train_tiny,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)

TENANT = "acme"


@pytest.fixture(params=["thread", "actor"])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "actor":
        request.getfixturevalue("ray_session")
    return str(request.param)


@pytest.fixture()
def world(tmp_path: Path) -> SimpleNamespace:
    """A registry with TENANT at v1 (production) and v2 (shadow), and a replica's spool."""
    root = str(tmp_path / "registry")
    reg = Registry.create(root, num_shards=2)
    prod = train_tiny(1)
    publish_models(reg, {TENANT: prod}, "run-1")
    publish_models(reg, {TENANT: train_tiny(2)}, "run-2", alias="shadow")
    return SimpleNamespace(root=root, reg=reg, production=load_booster(prod),
                           writer=SpoolWriter(tmp_path / "spools"))


@pytest.fixture()
def started() -> Iterator[list[ShadowExecutor]]:
    """The executors a test started and has not closed; closed at teardown."""
    executors: list[ShadowExecutor] = []
    yield executors
    for executor in executors:
        executor.close(30)


def _start(world: SimpleNamespace, kind: str, started: list[ShadowExecutor],
           **settings: float) -> ShadowExecutor:
    serve = ServeSettings(registry=world.root, shadow_worker=kind, **settings)
    executor = new_executor(world.root, serve, world.writer.path)
    started.append(executor)
    return executor


def _close(executor: ShadowExecutor, started: list[ShadowExecutor], timeout_s: float) -> None:
    started.remove(executor)
    executor.close(timeout_s)


def _append(world: SimpleNamespace, first: int, n: int) -> None:
    rng = np.random.default_rng(first)
    for i in range(first, first + n):
        x = rng.normal(size=(2, len(DEFAULT_FEATURES))).astype(np.float32)
        preds = world.production.inplace_predict(x).astype(np.float64)
        record = encode_pair(world.writer.next_seq(), TENANT, f"req{i}", 1, 2, time.time(),
                             0.001, False, x, preds)
        assert world.writer.append(record)


def _pairs(world: SimpleNamespace) -> int:
    return ShadowTables.for_registry(world.reg).query(PAIRS).num_rows


def test_every_record_is_logged_once(world: SimpleNamespace, kind: str,
                                     started: list[ShadowExecutor]) -> None:
    _append(world, 0, 3)  # spooled before the worker runs
    executor = _start(world, kind, started, shadow_flush_s=0.2)
    assert executor.kind == kind
    _append(world, 3, 4)  # ... and while it runs
    world.writer.append(encode_counts(world.writer.next_seq(), {(TENANT, 2, "dropped"): 5}))
    wait_for(lambda: _pairs(world) == 2 * 7, timeout=120)  # two rows per record
    _close(executor, started, 30)
    assert _pairs(world) == 14
    report = shadow_report(world.reg, TENANT)
    assert report.requests == 7 and report.comparison.pairs == 14 and report.dropped == 5
    assert not world.writer.pending()  # every record acknowledged


def test_close_commits_what_was_spooled(world: SimpleNamespace, kind: str,
                                       started: list[ShadowExecutor]) -> None:
    executor = _start(world, kind, started, shadow_flush_s=3600.0)  # no timed flush
    _append(world, 0, 5)
    _close(executor, started, 60)
    assert _pairs(world) == 10
    assert not world.writer.pending()
    assert world.writer.close()  # nothing left: the spool goes


def test_a_second_worker_on_a_committed_spool_logs_nothing_again(
        world: SimpleNamespace, kind: str, started: list[ShadowExecutor]) -> None:
    _append(world, 0, 4)
    _close(_start(world, kind, started, shadow_flush_s=3600.0), started, 60)
    assert _pairs(world) == 8
    again = _start(world, kind, started, shadow_flush_s=0.2)
    _append(world, 4, 1)  # a new record shows the second worker is reading
    wait_for(lambda: _pairs(world) == 10, timeout=120)
    _close(again, started, 30)
    assert _pairs(world) == 10
