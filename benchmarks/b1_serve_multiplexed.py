"""Baseline B1: a stock Ray Serve app with ``@serve.multiplexed``, through the default proxy.

One FastAPI ingress deployment (2 replicas) that is also the multiplexed model host: the
proxy routes a request to a replica that already holds the model named by the
``serve_multiplexed_model_id`` header (send it with ``tenantry loadtest
--multiplexed-header``). Same HTTP path as tenantry: ``/v1/tenants/{tenant_id}/predict``.

Run: ``python benchmarks/b1_serve_multiplexed.py --registry PATH --port P --cache-models M``
(blocks until killed).
"""

# No ``from __future__ import annotations`` here: Serve pickles the deployment class by
# value, and FastAPI must see the real ``Request`` annotation in the replica, not a string.
import argparse
import signal
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

__all__ = ["build_app", "main"]


def build_app(registry_root: str, cache_models: int, replicas: int = 2) -> Any:
    """The bound Serve application (imports Ray lazily)."""
    import numpy as np
    from ray import serve

    api = FastAPI(title="tenantry baseline B1")

    @serve.deployment(num_replicas=replicas, ray_actor_options={"num_cpus": 0},
                      max_ongoing_requests=64)
    @serve.ingress(api)
    class MultiplexedHost:
        """Ingress and multiplexed model host in one deployment."""

        def __init__(self, root: str) -> None:
            from registry import Registry

            self.registry = Registry.open(root)
            self.production = self.registry.production_versions()

        @serve.multiplexed(max_num_models_per_replica=cache_models)
        async def get_model(self, tenant_id: str) -> Any:
            import xgboost as xgb

            booster = xgb.Booster()
            booster.load_model(bytearray(self.registry.read_artifact(
                self.production[tenant_id])))
            booster.set_param({"nthread": 1})
            return booster

        @api.post("/v1/tenants/{tenant_id}/predict")
        async def predict(self, tenant_id: str, request: Request) -> Any:
            mv = self.production.get(tenant_id)
            if mv is None:
                return JSONResponse({"detail": f"unknown tenant {tenant_id!r}"},
                                    status_code=404)
            try:
                x = np.array((await request.json())["instances"], dtype=np.float64)
                if x.ndim != 2 or x.shape[1] != len(mv.feature_names):
                    raise ValueError(f"expected rows of {len(mv.feature_names)} features")
            except (ValueError, TypeError, KeyError) as exc:
                return JSONResponse({"detail": f"malformed instances: {exc}"}, status_code=422)
            try:
                booster = await self.get_model(tenant_id)
            except Exception as exc:  # noqa: BLE001 - any load failure is a 503
                return JSONResponse({"detail": f"model could not be loaded: {exc}"},
                                    status_code=503)
            preds = np.asarray(booster.inplace_predict(x)).ravel().tolist()
            return {"tenant_id": tenant_id, "model_version": mv.version, "predictions": preds}

        @api.get("/v1/tenants/{tenant_id}/model")
        async def model(self, tenant_id: str) -> Any:
            mv = self.production.get(tenant_id)
            if mv is None:
                return JSONResponse({"detail": "unknown tenant"}, status_code=404)
            return {"tenant_id": tenant_id, "production": mv.to_json()}

    return MultiplexedHost.bind(registry_root)  # type: ignore[attr-defined]  # a Deployment


def main(argv: list[str] | None = None) -> int:
    """Start Ray and Serve, deploy B1, block until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--cache-models", type=int, default=500)
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args(argv)

    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(build_app(args.registry, args.cache_models, args.replicas), name="b1",
              route_prefix="/")
    print(f"B1 ready on http://{args.host}:{args.port}", flush=True)

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while True:
            time.sleep(3600)
    except SystemExit:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
