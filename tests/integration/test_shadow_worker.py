"""The shadow worker as a Ray actor: its own process, restarted when it hangs or dies."""

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

from .conftest import FEATURES, publish, train_bytes, wait_for

pytestmark = pytest.mark.timeout(300)

TENANT = "acme"


def _host(root: str, **kw: Any) -> ModelHostState:
    settings = ServeSettings(registry=root, shadow_worker="actor", shadow_flush_s=0.2,
                             shadow_batch_interval_s=0.02, **kw)
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


def _answers(executor: Any) -> bool:
    try:
        return bool(executor.stats(timeout_s=10)["pid"])
    except Exception:  # noqa: BLE001 - still restarting
        return False


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


@pytest.mark.parametrize(("how", "transport"),
                         [("hang", "auto"), ("crash", "auto"), ("crash", "ray")])
def test_actor_worker_recovers_and_production_never_notices(
        ray_session: None, registry_root: str, tmp_path: Path, how: str,
        transport: str) -> None:
    off = _host(registry_root)
    expected = _send(off, 8, "x")
    # A hang is caught by the replica's watchdog (after max_age); a crash is reported by the
    # broken local channel or by Ray (before the watchdog's 30 s).
    state = _host(registry_root, shadow_max_age_s=2.0 if how == "hang" else 30.0,
                  shadow_transport=transport)
    mirror, _ = create_mirror(state, state.settings,
                              loader=_misbehaving_loader(str(tmp_path / "marker"), how))
    mirror.apply(TENANT, build_config(TENANT, 1.0))
    try:
        # The first request must reach the worker, not expire while its actor starts (that
        # can take longer than a 2 s max age on a fresh, busy machine).
        wait_for(lambda: _answers(mirror.executor), timeout=120)
        assert _send(state, 1, "first") == expected[:1]
        outcome = "timeout" if how == "hang" else "error"
        wait_for(lambda: mirror.outcomes[outcome] == 1, timeout=60, what=lambda: mirror.stats())
        assert mirror.executor.restarts == (1 if how == "hang" else 0)
        # Wait until the new worker answers (starting it can take longer than max_age on a
        # busy box, and requests queued meanwhile would rightly expire as timeouts).
        wait_for(lambda: _answers(mirror.executor), timeout=120)
        assert _send(state, 8, "x") == expected  # production answers meanwhile, unchanged
        wait_for(lambda: mirror.outcomes["ok"] == 8, timeout=60,  # the restarted worker
                 what=lambda: mirror.stats())  # shadows again
        stats = mirror.stats()
        assert stats["worker"]["kind"] == "actor" and stats["worker"]["pid"] != os.getpid()
        # auto: the restarted actor is on this node, so batches reach it over the socket.
        assert stats["worker"]["transport"] == ("socket" if transport == "auto" else "ray")
        assert stats["worker"]["priority"] == "idle"
    finally:
        state.close()
        off.close()
    report = shadow_report(Registry.open(registry_root), TENANT)
    assert report.comparison.pairs == 8
    assert (report.timeouts, report.errors) == ((1, 0) if how == "hang" else (0, 1))
