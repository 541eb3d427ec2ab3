"""The replica's event-loop lag probe (tenantry_event_loop_lag_seconds)."""

from __future__ import annotations

import asyncio
import time
from typing import Any


def test_a_blocked_loop_shows_in_the_lag_histogram(fresh: Any, closing: Any) -> None:
    state = closing(fresh.host())

    async def go() -> None:
        probe = asyncio.get_running_loop().create_task(state.probe_loop_lag())
        await asyncio.sleep(0.01)
        time.sleep(0.2)  # noqa: ASYNC251 - a step holding the loop: the probe fires late
        await asyncio.sleep(0.1)
        probe.cancel()

    asyncio.run(go())
    buckets = dict(state.metrics.loop_lag_buckets())
    assert buckets[float("inf")] >= 2  # the late wake-up and at least one on time
    assert buckets[float("inf")] - buckets[0.1] >= 1  # one wake-up over 100 ms late
    assert "tenantry_event_loop_lag_seconds_bucket" in state.metrics.render().decode()
