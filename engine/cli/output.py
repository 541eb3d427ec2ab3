"""What every command shares: its answer (:class:`Reply`), how it is printed (:func:`emit`),
the common options and the acting user."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from registry import Registry

__all__ = ["Handler", "Reply", "add_ray_job_options", "cli_actor", "common_parent", "emit",
           "open_registry", "storage_options"]

Text = str | Callable[[], str]
"""A command's human output, or a function building it (only called without ``--json``)."""


@dataclass(frozen=True)
class Reply:
    """A command's answer: the ``--json`` document, the human text and the exit code."""

    document: Any
    text: Text
    code: int = 0


Handler = Callable[[argparse.Namespace, Mapping[str, str]], "Reply | int"]
"""A command: parsed arguments and the environment read once by ``main`` -> its answer
(or an exit code, for the commands that print while they run)."""


def emit(args: argparse.Namespace, document: Any, text: Text) -> None:
    """Print ``document`` as JSON when ``--json`` was given, else the human text."""
    if getattr(args, "json", False):
        json.dump(document, sys.stdout, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write((text() if callable(text) else text).rstrip("\n") + "\n")
    sys.stdout.flush()


def common_parent(default_registry: str) -> argparse.ArgumentParser:
    """Options every command accepts: ``--registry`` and ``--json``."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--registry",
        default=default_registry,
        help="registry root: a path or s3:// URI (default: $TENANTRY_REGISTRY or %(default)s)",
    )
    parent.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    return parent


def add_ray_job_options(parser: argparse.ArgumentParser) -> None:
    """``--num-cpus`` and ``--no-progress``, shared by the commands that run a Ray Data job
    (``train``, ``score``, ``monitor run``)."""
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="CPUs for a local Ray started by this command")
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")


def cli_actor() -> str:
    """Who runs this command, for the alias and shadow logs (the OS user)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (a bare container)
        return "unknown"


def storage_options(root: str, env: Mapping[str, str]) -> dict[str, str]:
    """Object-store options for ``root`` from the ``AWS_*`` variables ``main`` read."""
    from registry.settings import RegistrySettings

    return RegistrySettings.from_env(env).storage_options(root)


def open_registry(root: str, env: Mapping[str, str], shards: int | None = None) -> Registry:
    """The registry at ``root`` with the storage options of ``env``; with ``shards``,
    created first if there is none (:meth:`Registry.create`)."""
    from registry import Registry

    opts = storage_options(root, env)
    return Registry.open(root, opts) if shards is None else Registry.create(root, shards, opts)
