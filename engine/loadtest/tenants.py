"""Which tenants the load goes to: the registry's production tenants, or synthetic ids."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from engine.loadtest.workload import synthetic_tenants
from registry.errors import RegistryNotFound, ValidationError

__all__ = ["TenantSet", "choose_tenants", "registry_tenants"]


@dataclass(frozen=True)
class TenantSet:
    """Tenant ids, their feature widths, and where they came from."""

    ids: tuple[str, ...]
    widths: tuple[int, ...]
    source: str  # "registry" or "synthetic"


def registry_tenants(root: str, limit: int | None, seed: int = 0,
                     storage_options: Mapping[str, str] | None = None) -> TenantSet:
    """Production tenants of the registry at ``root`` (a seeded sample of ``limit``;
    ``storage_options`` reach an object store).

    Raises:
        RegistryNotFound: there is no registry at ``root``.
        ValidationError: the registry has no production models.
    """
    from registry import Registry

    production = Registry.open(root, storage_options).production_versions()
    if not production:
        raise ValidationError(f"registry {root} has no production models to load-test")
    ids = sorted(production)
    if limit is not None and limit < len(ids):
        keep = np.random.default_rng(seed).choice(len(ids), size=limit, replace=False)
        ids = [ids[i] for i in sorted(keep)]
    widths = tuple(len(production[t].feature_names) for t in ids)
    return TenantSet(tuple(ids), widths, "registry")


def choose_tenants(source: str, registry_root: str, count: int | None, features: int,
                   seed: int = 0, storage_options: Mapping[str, str] | None = None
                   ) -> TenantSet:
    """Resolve ``--tenant-source`` (auto: the registry if one exists, else synthetic).

    Args:
        source: ``auto``, ``registry`` or ``synthetic``.
        registry_root: registry root path or URI.
        count: ``--tenants`` (None: all registry tenants, or 100 synthetic).
        features: feature width of synthetic tenants.
        seed: sampling seed.
        storage_options: the registry's object-store options (none: a local root).

    Returns:
        the tenant set.
    """
    if source in ("auto", "registry"):
        try:
            return registry_tenants(registry_root, count, seed, storage_options)
        except RegistryNotFound:
            if source == "registry":
                raise
    return TenantSet(tuple(synthetic_tenants(count or 100)), (features,) * (count or 100),
                     "synthetic")
