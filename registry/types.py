"""Typed values the registry hands across process boundaries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

__all__ = [
    "Alias",
    "AliasMove",
    "BinnedDistribution",
    "ModelProfile",
    "ModelVersion",
    "NewVersion",
    "PublishResult",
    "PublishState",
    "StagedArtifact",
    "TenantModels",
    "TenantSummary",
    "TrendPoint",
]


class Alias(str, Enum):
    """Names a version can be pointed at."""

    PRODUCTION = "production"
    SHADOW = "shadow"

    @classmethod
    def parse(cls, value: str) -> Alias:
        """The alias named ``value``; raises ValueError with the allowed names."""
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(a.value for a in cls)
            raise ValueError(f"unknown alias {value!r}: expected one of {allowed}") from None


class PublishState(str, Enum):
    """How far a run id got in publishing."""

    NONE = "none"
    PARTIAL = "partial"  # versions committed, aliases/run record not yet
    COMPLETE = "complete"


@dataclass(frozen=True, slots=True)
class StagedArtifact:
    """An artifact written under a claimed version, not yet visible in the index."""

    tenant_id: str
    shard: int
    version: int
    artifact_uri: str
    sha256: str
    size_bytes: int
    run_id: str


@dataclass(frozen=True)
class BinnedDistribution:
    """One variable's distribution in quantile bins: what drift is measured against.

    Bin ``i`` holds the values ``v`` with ``edges[i-1] < v <= edges[i]`` (the first and the
    last bin are open), so there are ``len(edges) + 1`` bins; missing values are counted
    apart, in ``missing_rate``.
    """

    name: str
    edges: tuple[float, ...]
    """Inner bin edges, strictly ascending (at most 9 for 10 bins; fewer when values repeat)."""
    shares: tuple[float, ...]
    """Share of the non-missing values in each bin (sums to 1; all 0 when there are none)."""
    missing_rate: float
    """Share of the values that were missing (NaN / null)."""
    count: int
    """Non-missing values the shares were computed from."""


@dataclass(frozen=True)
class ModelProfile:
    """A version's reference profile: its training rows per feature, its holdout scores."""

    features: tuple[BinnedDistribution, ...]
    """One per feature, in model order (position ``i`` is column ``i`` of a request)."""
    score: BinnedDistribution | None = None
    """The model's scores on the holdout (binary: probability; multiclass: the highest
    class probability; regression: the prediction)."""


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """One version's value of one metric: a point of ``registry trend``."""

    version: int
    data_date: str | None
    value: float | None
    run_id: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The point as ``registry trend --json`` prints it."""
        return {"version": self.version, "date": self.data_date, "value": self.value,
                "run_id": self.run_id, "created_at": self.created_at.isoformat()}


@dataclass(frozen=True)
class NewVersion:
    """A staged artifact plus what the index records about it."""

    artifact: StagedArtifact
    feature_names: tuple[str, ...]
    metrics: Mapping[str, float]
    data_date: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    objective: str = "binary:logistic"
    """The XGBoost objective: ``binary:logistic`` (one probability per row),
    ``reg:squarederror`` (one value) or ``multi:softprob`` (``num_class`` probabilities)."""
    num_class: int | None = None
    """Classes of a ``multi:softprob`` model; None for the other objectives."""
    feature_types: tuple[str, ...] = ()
    """Per feature name, ``float`` or ``categorical`` (empty: every feature is a float)."""
    profile: ModelProfile | None = None
    """The reference profile drift monitoring compares production traffic with (None:
    published without one; such a version is not judged)."""
    forest_check: str | None = None
    """The forest compiler's version (``engine.forest.FOREST_VERSION``) when the
    compiled artifact predicted like the trained Booster at publish time; None: unchecked
    or failed (serving checks it at load)."""


@dataclass(frozen=True, slots=True)
class AliasMove:
    """Point ``alias`` of a tenant at ``version`` (None clears it)."""

    tenant_id: str
    alias: str
    version: int | None
    reason: str = ""


@dataclass(frozen=True)
class ModelVersion:
    """One published, immutable model version as the index records it."""

    tenant_id: str
    shard: int
    version: int
    artifact_uri: str
    sha256: str
    size_bytes: int
    feature_names: tuple[str, ...]
    metrics: Mapping[str, float]
    run_id: str
    created_at: datetime
    data_date: str | None = None
    objective: str = "binary:logistic"
    """The XGBoost objective (a row written before objectives were recorded: binary)."""
    num_class: int | None = None
    """Classes of a ``multi:softprob`` model; None for the other objectives."""
    feature_types: tuple[str, ...] = ()
    """Per feature, ``float`` or ``categorical`` (empty: every feature is a float)."""
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Per categorical feature, the categories the model knows (the row's params)."""
    forest_check: str | None = None
    """The forest compiler version that checked this artifact at publish time (see
    :attr:`NewVersion.forest_check`); None on older rows and unchecked versions."""

    @property
    def categorical(self) -> frozenset[str]:
        """Names of the features typed categorical."""
        return frozenset(n for n, t in zip(self.feature_names, self.feature_types, strict=False)
                         if t == "categorical")

    def to_json(self) -> dict[str, Any]:
        """The VERSION document of DESIGN.md (plus objective, classes and feature types)."""
        return {
            "tenant_id": self.tenant_id,
            "version": self.version,
            "artifact_uri": self.artifact_uri,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "feature_names": list(self.feature_names),
            "metrics": dict(self.metrics),
            "run_id": self.run_id,
            "data_date": self.data_date,
            "created_at": self.created_at.isoformat(),
            "objective": self.objective,
            "num_class": self.num_class,
            "feature_types": list(self.feature_types) or ["float"] * len(self.feature_names),
            "categories": {k: list(v) for k, v in self.categories.items()},
        }


@dataclass(frozen=True)
class TenantModels:
    """A tenant's aliased versions."""

    tenant_id: str
    shard: int
    production: ModelVersion | None
    shadow: ModelVersion | None

    def to_json(self) -> dict[str, Any]:
        """The ``registry show`` document."""
        return {
            "tenant_id": self.tenant_id,
            "shard": self.shard,
            "production": self.production.to_json() if self.production else None,
            "shadow": self.shadow.to_json() if self.shadow else None,
        }


@dataclass(frozen=True, slots=True)
class TenantSummary:
    """One row of ``registry list``."""

    tenant_id: str
    shard: int
    production_version: int | None
    shadow_version: int | None
    latest_version: int

    def to_json(self) -> dict[str, Any]:
        """The ``registry list`` row."""
        return {
            "tenant_id": self.tenant_id,
            "shard": self.shard,
            "production_version": self.production_version,
            "shadow_version": self.shadow_version,
            "latest_version": self.latest_version,
        }


@dataclass(frozen=True, slots=True)
class PublishResult:
    """Outcome of publishing one run."""

    run_id: str
    published: int
    already_published: bool
    alias_moves: int = 0
