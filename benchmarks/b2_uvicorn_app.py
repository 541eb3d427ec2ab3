"""Baseline B2: one plain uvicorn process, a cachetools LRU of XGBoost Boosters, no Ray.

Serves tenantry's predict API (``POST /v1/tenants/{tenant_id}/predict``) and the cache
metrics on /metrics under tenantry's names, so ``tenantry loadtest`` measures it like the
real engine. The floor for Python serving on this box.

Run: ``python benchmarks/b2_uvicorn_app.py --registry PATH --port P --cache-models M``
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import uvicorn
import xgboost as xgb
from cachetools import LRUCache
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from registry import ModelVersion, Registry

__all__ = ["build_app", "main"]


class _Metrics:
    """The tenantry metric names this baseline exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.hits = Counter("tenantry_cache_hits", "Cache hits", registry=r)
        self.misses = Counter("tenantry_cache_misses", "Cache misses", registry=r)
        self.evictions = Counter("tenantry_cache_evictions", "Evictions", registry=r)
        self.bytes = Gauge("tenantry_cache_bytes", "Artifact bytes cached", registry=r)
        self.models = Gauge("tenantry_cache_models", "Models cached", registry=r)
        self.load = Histogram("tenantry_model_load_seconds", "Model load time", registry=r)
        self.requests = Counter("tenantry_requests", "Requests", ["route", "code"], registry=r)


class _BoosterLRU(LRUCache):  # type: ignore[type-arg]  # cachetools is untyped
    """LRU of (ModelVersion, Booster) that counts evictions and bytes."""

    def __init__(self, maxsize: int, metrics: _Metrics) -> None:
        super().__init__(maxsize=maxsize)
        self.metrics = metrics

    def popitem(self) -> Any:
        key, (mv, booster) = super().popitem()
        self.metrics.evictions.inc()
        self.metrics.bytes.dec(mv.size_bytes)
        return key, (mv, booster)


def build_app(registry_root: str, cache_models: int) -> FastAPI:
    """The B2 FastAPI app over the registry's production versions."""
    reg = Registry.open(registry_root)
    production: dict[str, ModelVersion] = reg.production_versions()
    metrics = _Metrics()
    cache = _BoosterLRU(cache_models, metrics)
    app = FastAPI(title="tenantry baseline B2")

    def error(status: int, detail: str) -> JSONResponse:
        metrics.requests.labels("predict", str(status)).inc()
        return JSONResponse({"detail": detail}, status_code=status)

    @app.post("/v1/tenants/{tenant_id}/predict")
    async def predict(tenant_id: str, request: Request) -> Any:
        mv = production.get(tenant_id)
        if mv is None:
            return error(404, f"unknown tenant {tenant_id!r}")
        entry = cache.get(tenant_id)
        if entry is None or entry[0].version != mv.version:
            metrics.misses.inc()
            t0 = time.perf_counter()
            try:
                booster = xgb.Booster()
                booster.load_model(bytearray(reg.read_artifact(mv)))
                booster.set_param({"nthread": 1})
            except Exception as exc:  # noqa: BLE001 - any load failure is a 503
                return error(503, f"model could not be loaded: {exc}")
            metrics.load.observe(time.perf_counter() - t0)
            cache[tenant_id] = entry = (mv, booster)
            metrics.bytes.inc(mv.size_bytes)
            metrics.models.set(len(cache))
        else:
            metrics.hits.inc()
        try:
            rows = (await request.json())["instances"]
            names = mv.feature_names
            if rows and isinstance(rows[0], dict):
                rows = [[r.get(n) for n in names] for r in rows]
            x = np.array(rows, dtype=np.float64)  # null -> nan
            if x.ndim != 2 or x.shape[1] != len(names):
                return error(422, f"expected rows of {len(names)} features")
        except (ValueError, TypeError, KeyError) as exc:
            return error(422, f"malformed instances: {exc}")
        preds = entry[1].inplace_predict(x)
        metrics.requests.labels("predict", "200").inc()
        return JSONResponse({"tenant_id": tenant_id, "model_version": mv.version,
                             "predictions": np.asarray(preds).ravel().tolist()},
                            headers={"x-model-version": str(mv.version)})

    @app.get("/v1/tenants/{tenant_id}/model")
    async def model(tenant_id: str) -> Any:
        mv = production.get(tenant_id)
        if mv is None:
            return JSONResponse({"detail": f"unknown tenant {tenant_id!r}"}, status_code=404)
        return {"tenant_id": tenant_id, "production": mv.to_json()}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type="text/plain")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> int:
    """Serve B2 until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--cache-models", type=int, default=500)
    args = parser.parse_args(argv)
    app = build_app(args.registry, args.cache_models)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
