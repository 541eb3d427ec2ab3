"""Slots: every ingress puts a replica in the same HAProxy slot, and a successor inherits."""

from __future__ import annotations

import pytest

from engine.serving import directory as directory_module
from engine.serving.directory import Endpoint, _Directory


def _ep(rid: str, port: int = 1000) -> Endpoint:
    return Endpoint(rid, "127.0.0.1", port, 0.0)


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(directory_module.time, "monotonic", lambda: now[0])
    return now


def test_replicas_get_the_lowest_free_slots_and_keep_them(clock: list[float]) -> None:
    d = _Directory(ttl_s=5.0, slots=4)
    assert [d.heartbeat(_ep(r)) for r in ("a", "b", "c")] == [1, 2, 3]
    assert d.heartbeat(_ep("b")) == 2  # a heartbeat keeps the slot
    assert sorted((ep.replica_id, ep.slot) for ep in d.live()) == [("a", 1), ("b", 2), ("c", 3)]


def test_a_replacement_takes_the_slot_of_a_replica_that_went_silent(clock: list[float]) -> None:
    d = _Directory(ttl_s=5.0, slots=4)
    for rid in ("a", "b", "c"):
        d.heartbeat(_ep(rid))
    clock[0] += 3
    d.heartbeat(_ep("a"))
    d.heartbeat(_ep("c"))
    clock[0] += 3  # b silent for 6 s > ttl
    assert {ep.replica_id for ep in d.live()} == {"a", "c"}
    assert d.heartbeat(_ep("d")) == 2


def test_leave_frees_the_slot_and_a_full_directory_gives_no_slot(clock: list[float]) -> None:
    d = _Directory(ttl_s=5.0, slots=2)
    assert d.heartbeat(_ep("a")) == 1
    assert d.heartbeat(_ep("b")) == 2
    assert d.heartbeat(_ep("c")) == 0  # no slot: not routed, not listed
    assert {ep.replica_id for ep in d.live()} == {"a", "b"}
    d.leave("a")
    d.leave("c")
    assert d.heartbeat(_ep("c")) == 1


def test_held_tenants_are_kept_per_slot_for_the_successor(clock: list[float]) -> None:
    d = _Directory(ttl_s=5.0, slots=4)
    d.report_held(2, ["t9", "t3"])
    assert d.held_tenants(2) == ["t9", "t3"]
    assert d.held_tenants(1) == []
