"""The shadow worker's model cache: production's byte-budget LRU, loading synchronously.

Shadow models live in the worker's process, apart from the production cache, so mirroring
can never evict a production model. The policy is production's own
:class:`~engine.serving.cache.BytesLRU` (cachetools, sized by each model's bytes); only
the worker's pump thread uses it, so loads are plain calls. Failed loads are remembered
briefly so a broken shadow artifact is not re-read for every mirrored request.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from engine.serving.cache import BytesLRU
from engine.serving.model import LoadedModel
from registry import ModelKey, ModelVersion

__all__ = ["Loader", "ShadowModels"]

Loader = Callable[[ModelVersion], LoadedModel]
FAILED_LOAD_TTL_S = 5.0


class ShadowModels:
    """Byte-budget LRU of loaded shadow models; loads (blocking) on a miss."""

    def __init__(self, budget_bytes: int, loader: Loader) -> None:
        self.loader = loader
        self._lru = BytesLRU(budget_bytes, lambda m: int(m.nbytes))
        self._failed: dict[ModelKey, tuple[float, Exception]] = {}
        self.loads = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the models held."""
        return int(self._lru.currsize)

    def get(self, mv: ModelVersion) -> LoadedModel:
        """The loaded model of ``mv``, loading it when absent.

        Raises:
            Exception: whatever the loader raised (remembered for a few seconds).
        """
        key = ModelKey(mv.tenant_id, mv.version)
        model: LoadedModel | None = self._lru.get(key)
        if model is not None:
            return model
        failed = self._failed.get(key)
        if failed is not None and time.monotonic() - failed[0] < FAILED_LOAD_TTL_S:
            raise failed[1]
        try:
            model = self.loader(mv)
        except Exception as exc:
            self._failed[key] = (time.monotonic(), exc)
            raise
        self._failed.pop(key, None)
        self.loads += 1
        try:
            self._lru[key] = model
        except ValueError:  # larger than the whole budget: use it once, keep nothing
            pass
        return model

    def __len__(self) -> int:
        return len(self._lru)
