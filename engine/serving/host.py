"""What one model-host replica does: resolve, load (cached), validate and predict.

:class:`ModelHostState` holds the replica's registry snapshot and model cache; it is
plain asyncio and knows nothing of HTTP or Ray, so tests drive it directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from engine.metrics import Metrics
from engine.serving.cache import Lookup, ModelCache
from engine.serving.model import LoadedModel, SelfCheckMemo, load_model
from engine.serving.validation import parse_body, to_matrix
from engine.settings import ServeSettings
from registry import Alias, ModelKey, ModelVersion, Registry
from registry.errors import ModelLoadError, TenantryError

__all__ = ["ModelHostState", "Prediction", "RowBuilder", "ShadowHook"]

RowBuilder = Callable[[LoadedModel], np.ndarray]  # rows of a request for the loaded model
FAILED_LOAD_TTL_S = 5.0  # a model that failed to load answers 503 at once for this long
LOOP_PROBE_S = 0.05  # how often the event-loop lag probe wakes up


class ShadowHook(Protocol):
    """What shadow mode plugs into a host (see engine.shadow)."""

    def after_predict(self, tenant_id: str, production: ModelVersion, x: np.ndarray,
                      predictions: np.ndarray, request_id: str, synthetic: bool,
                      latency_s: float) -> None:
        """Called after the production answer is computed; must not block."""

    def pinned_versions(self, tenant_id: str) -> Iterable[int]:
        """Versions of the tenant the cache must not drop as stale."""

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start background work, on ``loop`` (called from its thread) when given."""

    def close(self) -> None:
        """Flush what is buffered (called on graceful shutdown)."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """A production answer: one value per row, or K class probabilities per row
    (multi:softprob)."""

    tenant_id: str
    version: int
    predictions: list[float] | list[list[float]]


class ModelHostState:
    """Snapshot + cache + predict, for one replica."""

    def __init__(self, settings: ServeSettings, registry: Registry,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics or Metrics()
        self.snapshot = registry.new_snapshot()
        self.executor = ThreadPoolExecutor(max(1, settings.load_threads),
                                           thread_name_prefix="tenantry-load")
        self.cache: ModelCache[ModelKey, LoadedModel] = ModelCache(
            settings.cache_bytes, self._load, sizeof=lambda m: m.nbytes,
            on_evict=self._on_evict)
        self.selfchecked = SelfCheckMemo()  # artifacts whose forest passed its self-check
        self.shadow: ShadowHook | None = None
        # More after-predict hooks, handed in by the composition (the prediction log).
        self.hooks: list[ShadowHook] = []
        self._failed: dict[ModelKey, tuple[float, TenantryError]] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._lag_probe: asyncio.Task[None] | None = None
        self.metrics.registry_lag_seconds.set_function(self.snapshot.lag_seconds)
        import xgboost  # noqa: F401 - import now (~1 s), not inside the first load

    # -- loading ------------------------------------------------------------------------
    async def _load(self, key: ModelKey) -> LoadedModel:
        failed = self._failed.get(key)
        if failed is not None and time.monotonic() - failed[0] < FAILED_LOAD_TTL_S:
            raise failed[1]
        mv = self.snapshot.version(key.tenant_id, key.version)
        started = time.perf_counter()
        try:
            model = await asyncio.get_running_loop().run_in_executor(
                self.executor, load_model, self.registry, mv, self.selfchecked)
        except TenantryError as exc:
            self.metrics.model_load_failures.inc()
            self._failed[key] = (time.monotonic(), exc)
            raise
        except Exception as exc:
            self.metrics.model_load_failures.inc()
            err = ModelLoadError(f"could not load {key}: {exc}")
            self._failed[key] = (time.monotonic(), err)
            raise err from exc
        self._failed.pop(key, None)
        self.metrics.model_load_seconds.observe(time.perf_counter() - started)
        if model.selfcheck_fallback:
            self.metrics.model_selfcheck_fallbacks.inc()
        return model

    def _on_evict(self, key: ModelKey, model: LoadedModel) -> None:
        self.metrics.cache_evictions.inc()

    def _update_gauges(self) -> None:
        self.metrics.cache_bytes.set(self.cache.nbytes)
        self.metrics.cache_models.set(len(self.cache))

    async def model_for(self, mv: ModelVersion) -> tuple[LoadedModel, Lookup]:
        """The loaded model for ``mv`` and how the cache answered."""
        return await self._cached(ModelKey(mv.tenant_id, mv.version))

    async def _cached(self, key: ModelKey) -> tuple[LoadedModel, Lookup]:
        model, lookup = await self.cache.get(key)
        if lookup is Lookup.MISS:
            self._update_gauges()
        return model, lookup

    def _count(self, lookup: Lookup) -> None:
        # A miss is a lookup that started a load. Requests that arrive while that load is
        # in flight wait for it without loading again: they count as hits (as the trace
        # model of an LRU counts every access after the first) and also as coalesced.
        if lookup is Lookup.MISS:
            self.metrics.cache_misses.inc()
        else:
            self.metrics.cache_hits.inc()
            if lookup is Lookup.COALESCED:
                self.metrics.cache_coalesced.inc()

    # -- the request path ---------------------------------------------------------------
    # The API validates a tenant id once, at the edge, and hands it down; the host finds
    # the production model by its version number alone (a cached model carries its
    # ModelVersion), so a cache hit builds no registry row at any tenant count.
    def production_key(self, tenant_id: str) -> ModelKey:
        """The key of the tenant's production model; raises UnknownTenant."""
        return ModelKey(tenant_id, self.snapshot.resolve_version(tenant_id, Alias.PRODUCTION))

    def resolve(self, tenant_id: str, version: int | None = None) -> ModelVersion:
        """The production model's version (the cached model's, when it is cached), or the
        pinned ``version``; raises UnknownTenant / UnknownVersion."""
        if version is not None:
            return self.snapshot.version(tenant_id, version)
        key = self.production_key(tenant_id)
        model = self.cache.peek(key)
        return model.version if model is not None else self.snapshot.version(tenant_id, key.version)

    async def predict(self, tenant_id: str, body: bytes, request_id: str = "",
                      synthetic: bool = False) -> Prediction:
        """Answer one /v1 predict ``body`` with the tenant's production model; the caller
        has validated ``tenant_id``; the hooks get ``request_id`` and ``synthetic``.

        Raises:
            UnknownTenant / ValidationError / ChecksumMismatch / ModelLoadError: mapped to
            404 / 422 / 503 / 503 by the API.
        """
        started = time.perf_counter()
        key = self.production_key(tenant_id)
        instances = parse_body(body, self.settings.max_rows)
        model, lookup = await self._cached(key)
        self._count(lookup)
        x = to_matrix(instances, model.feature_names, model.index, model.category_codes)
        return self._answer(model, x, True, request_id, synthetic, started)

    async def predict_rows(self, mv: ModelVersion, rows: RowBuilder, pinned: bool = False,
                           request_id: str = "", synthetic: bool = False) -> Prediction:
        """Like :meth:`predict`, for a body another wire format (e.g. Open Inference
        Protocol tensors) has already parsed, with the version the caller resolved.

        Args:
            mv: the version to answer with (:meth:`resolve`); loaded into the same cache.
            rows: builds the ``(rows, n_features)`` float32 matrix for the loaded model.
            pinned: the caller asked for this version (not production): no hooks see it.
            request_id: passed to the after-predict hooks.
            synthetic: passed to the after-predict hooks.

        Raises:
            ValidationError / ChecksumMismatch / ModelLoadError.
        """
        started = time.perf_counter()
        model, lookup = await self._cached(ModelKey(mv.tenant_id, mv.version))
        self._count(lookup)
        return self._answer(model, rows(model), not pinned, request_id, synthetic, started)

    def _answer(self, model: LoadedModel, x: np.ndarray, production: bool, request_id: str,
                synthetic: bool, started: float) -> Prediction:
        """Predict ``x``; production answers go to the shadow and the other hooks."""
        mv = model.version
        preds = model.predict(x)
        if production:
            for hook in ([self.shadow] if self.shadow is not None else []) + self.hooks:
                hook.after_predict(mv.tenant_id, mv, x, preds, request_id, synthetic,
                                   time.perf_counter() - started)
        return Prediction(mv.tenant_id, mv.version, preds.tolist())

    # -- keeping current ----------------------------------------------------------------
    def evict_stale(self) -> int:
        """Drop cached versions no alias (or shadow config) of their tenant points at."""
        def stale(key: ModelKey) -> bool:
            wanted = {self.snapshot.alias_version(key.tenant_id, a) for a in Alias}
            if self.shadow is not None:
                wanted.update(self.shadow.pinned_versions(key.tenant_id))
            return key.version not in wanted

        n = self.cache.evict_where(stale)
        if n:
            self._update_gauges()
        return n

    async def refresh_once(self) -> bool:
        """Refresh the snapshot off-loop; evict what it made stale. True if it changed."""
        started = time.perf_counter()
        changed = await asyncio.get_running_loop().run_in_executor(self.executor,
                                                                   self.snapshot.refresh)
        self.metrics.registry_refresh_seconds.observe(time.perf_counter() - started)
        if changed:
            self.evict_stale()
        return changed

    async def run_refresher(self) -> None:
        """Refresh forever at the configured interval (cancel the task to stop)."""
        while True:
            await asyncio.sleep(self.settings.refresh_interval_s)
            with contextlib.suppress(Exception):  # keep serving the last good snapshot
                await self.refresh_once()

    async def probe_loop_lag(self) -> None:
        """Forever: sleep ``LOOP_PROBE_S`` and record how much later than asked the loop
        woke up (``tenantry_event_loop_lag_seconds``; cancel the task to stop)."""
        loop = asyncio.get_running_loop()
        observe = self.metrics.event_loop_lag.observe
        while True:
            asked = loop.time() + LOOP_PROBE_S
            await asyncio.sleep(LOOP_PROBE_S)
            observe(max(0.0, loop.time() - asked))

    def start_refresher(self) -> None:
        """Start :meth:`run_refresher`, the loop-lag probe (and the shadow's worker) on the
        running loop."""
        loop = asyncio.get_running_loop()
        self._refresher = loop.create_task(self.run_refresher())
        self._lag_probe = loop.create_task(self.probe_loop_lag())
        if self.shadow is not None:
            self.shadow.start(loop)
        for hook in self.hooks:
            hook.start(loop)

    async def preload(self, tenants: Iterable[str], budget_bytes: int) -> int:
        """Load the given tenants' production models, hottest first, up to ``budget_bytes``."""
        loaded = 0
        for tenant in tenants:
            if self.cache.nbytes >= budget_bytes:
                break
            try:
                await self._cached(self.production_key(tenant))
                loaded += 1
            except TenantryError:
                continue
        return loaded

    def stats(self) -> dict[str, Any]:
        """Small status document for heartbeats and /readyz."""
        return {"models": len(self.cache), "bytes": self.cache.nbytes,
                "budget_bytes": self.cache.budget_bytes,
                "snapshot_generation": self.snapshot.generation,
                "tenants": self.snapshot.tenant_count()}

    def freshness(self) -> dict[str, Any]:
        """Age of the registry snapshot (seconds since its last successful refresh; None
        before the first) and whether it is older than ``stale_after_refreshes`` refresh
        intervals (the registry cannot be read: this replica serves what it last read)."""
        age = self.snapshot.lag_seconds()
        if age == float("inf"):
            return {"snapshot_age_s": None, "stale": True}
        limit = self.settings.stale_after_refreshes * self.settings.refresh_interval_s
        return {"snapshot_age_s": round(age, 3), "stale": age > limit}

    def close(self) -> None:
        """Stop background work, flush shadow logs and release the loader threads."""
        for task in (self._refresher, self._lag_probe):
            if task is not None:
                task.cancel()
        if self.shadow is not None:
            self.shadow.close()
        for hook in self.hooks:
            hook.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
