"""A small, synchronous LRU of shadow models, apart from the production cache.

Shadow models live here so mirroring can never evict a production model; only the
shadow worker thread uses it. Failed loads are remembered briefly so a broken shadow
artifact is not re-read for every mirrored request.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from engine.serving.model import LoadedModel
from registry import ModelKey, ModelVersion

__all__ = ["Loader", "ShadowModels"]

Loader = Callable[[ModelVersion], LoadedModel]
FAILED_LOAD_TTL_S = 5.0


class ShadowModels:
    """Byte-budget LRU of loaded shadow models; loads synchronously on a miss."""

    def __init__(self, budget_bytes: int, loader: Loader) -> None:
        self.budget_bytes = budget_bytes
        self.loader = loader
        self._models: OrderedDict[ModelKey, LoadedModel] = OrderedDict()
        self._failed: dict[ModelKey, tuple[float, Exception]] = {}
        self._lock = threading.Lock()
        self.nbytes = 0
        self.loads = 0

    def get(self, mv: ModelVersion) -> LoadedModel:
        """The loaded model of ``mv``, loading it (blocking) when absent.

        Raises:
            Exception: whatever the loader raised (remembered for a few seconds).
        """
        key = ModelKey(mv.tenant_id, mv.version)
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
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
        with self._lock:
            self.loads += 1
            self._models[key] = model
            self.nbytes += model.nbytes
            while self.nbytes > self.budget_bytes and len(self._models) > 1:
                _, old = self._models.popitem(last=False)
                self.nbytes -= old.nbytes
        return model

    def __len__(self) -> int:
        return len(self._models)
