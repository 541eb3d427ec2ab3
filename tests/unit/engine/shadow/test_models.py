"""The shadow worker's model cache: production's byte-budget LRU, failed loads remembered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from engine.serving.cache import BytesLRU
from engine.shadow.models import ShadowModels


@dataclass
class _Model:
    name: str
    nbytes: int


@dataclass(frozen=True)
class _Version:
    tenant_id: str
    version: int


def test_shadow_models_use_the_production_byte_budget_lru() -> None:
    loads: list[str] = []

    def load(mv: Any) -> Any:
        loads.append(mv.tenant_id)
        return _Model(mv.tenant_id, 40)

    models = ShadowModels(100, load)
    assert isinstance(models._lru, BytesLRU)
    for t in ("a", "b", "a", "c"):  # c evicts the least recently used: b
        models.get(_Version(t, 1))  # type: ignore[arg-type]  # tenant_id/version suffice
    assert loads == ["a", "b", "c"] and len(models) == 2 and models.nbytes == 80
    models.get(_Version("b", 1))  # type: ignore[arg-type]
    assert loads[-1] == "b"


def test_failed_loads_are_remembered_and_oversized_models_not_kept() -> None:
    calls = []

    def load(mv: Any) -> Any:
        calls.append(mv.tenant_id)
        if mv.tenant_id == "bad":
            raise OSError("unreadable")
        return _Model(mv.tenant_id, 500)

    models = ShadowModels(100, load)
    for _ in range(3):
        with pytest.raises(OSError, match="unreadable"):
            models.get(_Version("bad", 1))  # type: ignore[arg-type]
    assert calls == ["bad"]
    assert models.get(_Version("big", 1)).name == "big"  # type: ignore[arg-type,attr-defined]
    assert len(models) == 0
