"""The shadow worker as a Ray actor: its own process, restarted when it hangs or dies,
resuming from the replica's spool."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.serving.host import ModelHostState
from engine.settings import ServeSettings
from engine.shadow import build_config, create_mirror, shadow_report
from registry import Registry
from tests.conftest import wait_for

from .conftest import FEATURES, publish, train_bytes

pytestmark = pytest.mark.timeout(300)

TENANT = "acme"


def _host(root: str, **kw: Any) -> ModelHostState:
    settings = ServeSettings(registry=root, shadow_worker="actor", shadow_flush_s=0.2, **kw)
    return ModelHostState(settings, Registry.open(root))


def _send(state: ModelHostState, n: int, prefix: str) -> list[list[float]]:
    rows = np.random.default_rng(3).normal(size=(n, len(FEATURES)))

    async def go() -> list[list[float]]:
        out = []
        for i, row in enumerate(rows):
            body = json.dumps({"instances": [row.tolist()]}).encode()
            out.append((await state.predict(TENANT, body, f"{prefix}{i}")).predictions)
        return out
    return asyncio.run(go())


@pytest.fixture()
def registry_root(tmp_path: Path) -> str:
    reg = Registry.create(str(tmp_path / "registry"), num_shards=2)
    publish(reg, {TENANT: train_bytes(11)}, "prod")
    publish(reg, {TENANT: train_bytes(12, rounds=12)}, "candidate", alias="shadow")
    return reg.root


def _misbehaving_loader(marker: str, how: str) -> Any:
    """A loader whose first call (across restarts: a marker file) hangs or kills its process."""
    def load(mv: Any) -> Any:
        from engine.serving.model import load_model

        if not os.path.exists(marker):
            Path(marker).touch()
            if how == "hang":
                time.sleep(3600)
            os._exit(1)  # a crash of the shadow worker's process
        return load_model(Registry.open(Path(marker).parent.joinpath("registry").as_posix()),
                          mv)
    return load


@pytest.mark.parametrize("how", ["hang", "crash"])
def test_actor_worker_recovers_and_production_never_notices(
        ray_session: None, registry_root: str, tmp_path: Path, how: str) -> None:
    off = _host(registry_root)
    expected = _send(off, 8, "x")
    # A hang is caught by the worker's watchdog (after max_age), which replaces its process;
    # a crash is a process Ray restarts. Either way the new worker resumes from the spool.
    state = _host(registry_root, shadow_max_age_s=2.0 if how == "hang" else 30.0)
    mirror, _ = create_mirror(state, state.settings, spool_root=tmp_path / "spools",
                              loader=_misbehaving_loader(str(tmp_path / "marker"), how))
    mirror.apply(TENANT, build_config(TENANT, 1.0))
    try:
        # Spooled at once, even while the worker's actor is still starting.
        assert _send(state, 1, "first") == expected[:1]
        assert _send(state, 8, "x") == expected  # production answers meanwhile, unchanged
        # hang: the record it hung on is a timeout; crash: it is sent again and logged.
        ok = 8 if how == "hang" else 9
        wait_for(lambda: mirror.outcomes["ok"] == ok, timeout=120, what=lambda: mirror.stats())
        assert mirror.outcomes["timeout"] == (1 if how == "hang" else 0)
        stats = mirror.stats()
        assert stats["worker"]["kind"] == "actor" and stats["worker"]["pid"] != os.getpid()
        assert stats["worker"]["priority"] == "idle"
    finally:
        state.close()
        off.close()
    report = shadow_report(Registry.open(registry_root), TENANT)
    assert report.comparison.pairs == ok and report.requests == ok
    assert (report.timeouts, report.errors) == ((1, 0) if how == "hang" else (0, 0))
    assert not (tmp_path / "spools").exists()  # committed, so removed on close
