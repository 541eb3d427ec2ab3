"""Configuration from the environment: the one reader every settings class uses, and the
registry's own settings.

:func:`read_env` turns ``TENANTRY_*`` variables into typed field values of a settings
dataclass with pydantic-settings; each package's settings class names its variables
(``TENANTRY_TRAIN_<FIELD>``, ``TENANTRY_SCORE_<FIELD>``, ``TENANTRY_<FIELD>`` for serving, …)
and applies CLI flags over them (flag > environment > default). The ``tenantry`` command
reads the process environment once, in ``main``, and hands it down.

On ``s3://`` roots the usual AWS variables apply: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``)
and ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for S3-compatible servers. Without
keys, each client uses its default credential chain (e.g. the EC2 instance profile).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from registry.errors import ValidationError
from registry.storage import storage_options_from_env

__all__ = ["DEFAULT_ROOT", "RegistrySettings", "env_names", "process_env", "read_env"]

DEFAULT_ROOT = "./tenantry-data/registry"

EnvNames = Mapping[str, tuple[str, ...]]
"""Field name -> the variables that set it, the first one present winning."""

RAY_FIELDS = ("num_cpus", "ray_address")


def process_env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    """``environ``, or this process's environment when None.

    The ``tenantry`` command always passes the environment it read once; the None default
    only serves library callers that build settings themselves (the Serve app built from
    a config file, benchmarks).
    """
    return os.environ if environ is None else environ


def env_names(cls: type, prefix: str) -> dict[str, tuple[str, ...]]:
    """Variables of every field of the dataclass ``cls``: ``<prefix><FIELD>``, except
    ``num_cpus``/``ray_address`` read from ``TENANTRY_RAY_NUM_CPUS`` and
    ``TENANTRY_RAY_ADDRESS`` (else ``RAY_ADDRESS``, as inside `ray job submit`)."""
    names: dict[str, tuple[str, ...]] = {}
    for f in dataclasses.fields(cls):
        if f.name in RAY_FIELDS:
            names[f.name] = ("TENANTRY_RAY_" + f.name.removeprefix("ray_").upper(),)
        else:
            names[f.name] = (prefix + f.name.upper(),)
    if "ray_address" in names:
        names["ray_address"] += ("RAY_ADDRESS",)
    return names


class _Environ(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (not ``os.environ``)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls, case_sensitive=True, env_ignore_empty=True)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k: v for k, v in self._environ.items() if v != ""}


class _FromInit(BaseSettings):
    """Base of the generated models: values come only from :class:`_Environ`'s output."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True)

    @classmethod
    def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


@functools.cache
def _model(cls: type, names: tuple[tuple[str, tuple[str, ...]], ...]) -> type[BaseSettings]:
    hints = typing.get_type_hints(cls)
    spec: dict[str, Any] = {
        name: (hints[name] | None,
               pydantic.Field(None, validation_alias=pydantic.AliasChoices(*variables)))
        for name, variables in names}
    return pydantic.create_model(f"{cls.__name__}Environment", __base__=_FromInit, **spec)


def read_env(cls: type, names: EnvNames, environ: Mapping[str, str],
             error: type[ValidationError] = ValidationError) -> dict[str, Any]:
    """Field values of the dataclass ``cls`` set in ``environ``, parsed by field type.

    Args:
        cls: a settings dataclass (its type hints give each field's type).
        names: the variables of each field read (see :func:`env_names`); empty values
            count as unset.
        environ: the environment to read.
        error: the error class raised for a value that does not parse.

    Returns:
        Only the fields whose variable is set, e.g. ``{"window_days": 3}``.

    Raises:
        error: e.g. ``TENANTRY_TRAIN_WINDOW_DAYS='seven' is not a valid int``.
    """
    model = _model(cls, tuple((k, tuple(v)) for k, v in names.items()))
    raw = _Environ(model, environ)()
    try:
        return model(**raw).model_dump(exclude_unset=True)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        key = str(first["loc"][0])
        kind = typing.get_type_hints(cls)[_field_of(names, key)]
        raise error(f"{key}={first['input']!r} is not a valid "
                    f"{getattr(kind, '__name__', kind)}: {first['msg']}") from None


def _field_of(names: EnvNames, key: str) -> str:
    return next(name for name, variables in names.items() if key in variables)


@dataclass(frozen=True)
class RegistrySettings:
    """Where the registry lives and how to reach an object store."""

    root: str = DEFAULT_ROOT
    """Registry root: a local path or ``s3://bucket/prefix`` (``TENANTRY_REGISTRY``)."""
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    """The AWS_* variables seen at start, for object-store credentials and endpoint."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RegistrySettings:
        """Read ``TENANTRY_REGISTRY`` and the usual AWS variables.

        Args:
            environ: the environment ``main`` read (None: this process's).

        Returns:
            Settings holding the root and a copy of the ``AWS_*`` variables.
        """
        env = process_env(environ)
        values = read_env(cls, {"root": ("TENANTRY_REGISTRY",)}, env)
        return cls(env={k: v for k, v in env.items() if k.startswith("AWS_")}, **values)

    def storage_options(self, root: str | None = None) -> dict[str, str]:
        """deltalake/pyarrow storage options for ``root`` (default: this root).

        Args:
            root: a registry root; local paths get no options.

        Returns:
            Options for :class:`registry.Registry` (Delta index and artifact store).
        """
        return storage_options_from_env(root or self.root, self.env)
