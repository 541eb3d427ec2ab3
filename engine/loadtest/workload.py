"""What the load looks like: Zipf tenant popularity and realistic per-tenant feature rows.

Popularity rank is a random permutation of the tenants (so the hottest tenant is not
simply the first id). Each tenant gets its own feature profile (per-feature location,
scale, a few integer-valued columns, occasional outliers and missing values), so rows
look like a customer's data rather than i.i.d. noise. A ``cold_fraction`` of requests go
to a uniformly random tenant, mixing rarely-seen (cold) tenants into the Zipf head.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from engine.loadtest.client import build_request

__all__ = ["SYNTHETIC_HEADER", "TenantProfile", "WireProtocol", "Workload", "ZipfSampler",
           "request_body", "request_path", "synthetic_tenants"]

SYNTHETIC_HEADER = ("x-tenantry-synthetic", "1")
MULTIPLEX_HEADER = "serve_multiplexed_model_id"


class WireProtocol(str, Enum):
    """Which HTTP API the load goes to: tenantry's /v1 or the Open Inference Protocol."""

    V1 = "v1"
    V2 = "v2"


def request_path(tenant: str, protocol: WireProtocol = WireProtocol.V1) -> str:
    """The predict (v1) or infer (v2) path of a tenant."""
    if protocol is WireProtocol.V2:
        return f"/v2/models/{tenant}/infer"
    return f"/v1/tenants/{tenant}/predict"


def request_body(rows: Sequence[Sequence[float | None]],
                 protocol: WireProtocol = WireProtocol.V1) -> bytes:
    """Compact JSON body scoring ``rows`` (missing values as null).

    Args:
        rows: feature rows in model order, all of one width.
        protocol: v1 ``{"instances": rows}`` or a V2 request with one FP32
            ``[len(rows), width]`` tensor, row-major.

    Returns:
        the body bytes.
    """
    if protocol is WireProtocol.V2:
        width = len(rows[0]) if rows else 0
        doc: dict[str, object] = {"inputs": [{
            "name": "input__0", "datatype": "FP32", "shape": [len(rows), width],
            "data": [v for row in rows for v in row]}]}
    else:
        doc = {"instances": [list(row) for row in rows]}
    return json.dumps(doc, separators=(",", ":")).encode()


def synthetic_tenants(n: int) -> list[str]:
    """``n`` synthetic tenant ids (valid registry ids)."""
    if n < 1:
        raise ValueError("need at least one tenant")
    return [f"synthetic-{i:05d}" for i in range(n)]


class ZipfSampler:
    """Draws tenant indices with P(rank k) proportional to 1 / k**s (s >= 0)."""

    def __init__(self, n: int, s: float, seed: int = 0, cold_fraction: float = 0.0) -> None:
        if n < 1 or s < 0 or not 0.0 <= cold_fraction <= 1.0:
            raise ValueError("need n >= 1, s >= 0 and 0 <= cold_fraction <= 1")
        self.n, self.s, self.cold_fraction = n, s, cold_fraction
        self._rng = np.random.default_rng(seed)
        weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
        self.probabilities = weights / weights.sum()  # by popularity rank
        self._cdf = np.cumsum(self.probabilities)
        self._cdf[-1] = 1.0
        self.rank_to_index = self._rng.permutation(n)

    def sample(self, size: int) -> np.ndarray:
        """Draw ``size`` tenant indices.

        Returns:
            int64 array of indices into the tenant list.
        """
        ranks = np.searchsorted(self._cdf, self._rng.random(size), side="right")
        picks = self.rank_to_index[np.minimum(ranks, self.n - 1)]
        if self.cold_fraction > 0:
            cold = self._rng.random(size) < self.cold_fraction
            picks[cold] = self._rng.integers(0, self.n, size=int(cold.sum()))
        return picks.astype(np.int64)


@dataclass(frozen=True)
class TenantProfile:
    """The feature distribution of one tenant's rows."""

    width: int
    loc: np.ndarray = field(repr=False)
    scale: np.ndarray = field(repr=False)
    integer: np.ndarray = field(repr=False)  # bool mask of count-like columns
    missing_rate: float = 0.01
    outlier_rate: float = 0.005

    @classmethod
    def random(cls, width: int, rng: np.random.Generator) -> TenantProfile:
        """A plausible profile: varied locations and log-normal scales per feature."""
        return cls(width=width, loc=rng.normal(0.0, 5.0, width),
                   scale=rng.lognormal(0.0, 1.0, width), integer=rng.random(width) < 0.2)

    def rows(self, count: int, rng: np.random.Generator) -> list[list[float | None]]:
        """``count`` rows; missing values are ``None`` (sent as JSON null)."""
        values = self.loc + self.scale * rng.standard_normal((count, self.width))
        outliers = rng.random((count, self.width)) < self.outlier_rate
        values[outliers] *= 10.0
        values[:, self.integer] = np.abs(np.round(values[:, self.integer]))
        missing = rng.random((count, self.width)) < self.missing_rate
        return [[None if m else round(float(v), 6) for v, m in zip(row, miss)]
                for row, miss in zip(values, missing)]


class Workload:
    """Builds request bytes for sampled tenants (bodies precomputed off the hot path)."""

    def __init__(self, tenants: Sequence[str], widths: Sequence[int], host: str,
                 zipf_s: float, seed: int = 0, cold_fraction: float = 0.0,
                 rows_per_request: int = 1, multiplexed_header: bool = False,
                 synthetic: bool = True, protocol: WireProtocol = WireProtocol.V1) -> None:
        if len(tenants) != len(widths) or not tenants:
            raise ValueError("need one feature width per tenant")
        self.tenants = list(tenants)
        self.host = host
        self.rows_per_request = rows_per_request
        self.multiplexed_header = multiplexed_header
        self.synthetic = synthetic
        self.protocol = WireProtocol(protocol)
        self.sampler = ZipfSampler(len(tenants), zipf_s, seed, cold_fraction)
        self._rng = np.random.default_rng(seed + 1)
        profile_rng = np.random.default_rng(seed + 2)
        self.profiles = [TenantProfile.random(w, profile_rng) for w in widths]
        self._pool: dict[int, list[bytes]] = {}

    def _bodies(self, index: int) -> list[bytes]:
        """A small pool of request bodies per tenant, built lazily and reused."""
        bodies = self._pool.get(index)
        if bodies is None:
            rows = self.profiles[index].rows(8 * self.rows_per_request, self._rng)
            step = self.rows_per_request
            bodies = [request_body(rows[i:i + step], self.protocol)
                      for i in range(0, len(rows), step)]
            self._pool[index] = bodies
        return bodies

    def requests(self, count: int) -> tuple[np.ndarray, list[bytes]]:
        """Sample ``count`` requests.

        Returns:
            (tenant indices, raw HTTP request bytes) aligned.
        """
        picks = self.sampler.sample(count)
        which = self._rng.integers(0, 8, size=count)
        out: list[bytes] = []
        for idx, k in zip(picks.tolist(), which.tolist()):
            tenant = self.tenants[idx]
            headers = [SYNTHETIC_HEADER] if self.synthetic else []
            if self.multiplexed_header:
                headers.append((MULTIPLEX_HEADER, tenant))
            out.append(build_request("POST", self.host, request_path(tenant, self.protocol),
                                     self._bodies(idx)[k], headers))
        return picks, out
