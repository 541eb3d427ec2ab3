"""The `tenantry` command line: a thin argparse front over the library.

Each package contributes its sub-commands through an ``add_commands(subparsers)`` function;
a command's handler returns an exit code and prints either text or, with ``--json``, one
JSON document on stdout. Errors the user can fix are printed as one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from registry.errors import TenantryError

__all__ = ["build_parser", "emit", "main", "register_checks"]

Handler = Callable[[argparse.Namespace], int]

def default_registry() -> str:
    """The registry root used when ``--registry`` is not given (``TENANTRY_REGISTRY``)."""
    from registry.settings import RegistrySettings

    return RegistrySettings.from_env().root


def emit(args: argparse.Namespace, document: Any, text: str | Callable[[], str]) -> None:
    """Print ``document`` as JSON when ``--json`` was given, else the human text."""
    if getattr(args, "json", False):
        json.dump(document, sys.stdout, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write((text() if callable(text) else text).rstrip("\n") + "\n")
    sys.stdout.flush()


def common_parent() -> argparse.ArgumentParser:
    """Options every command accepts: ``--registry`` and ``--json``."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--registry",
        default=default_registry(),
        help="registry root: a path or s3:// URI (default: $TENANTRY_REGISTRY or %(default)s)",
    )
    parent.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    return parent


def register_checks() -> None:
    """Wire serving's publish-time self-check into training (which must not import
    engine): every model a training run in this process publishes records whether its
    compiled forest predicts like XGBoost, so loads need not check it again."""
    from engine.serving.model import publish_check
    from training.checks import register_artifact_check

    register_artifact_check(publish_check)


def build_parser() -> argparse.ArgumentParser:
    """Build the full parser with every package's sub-commands."""
    from registry import cli as registry_cli

    parser = argparse.ArgumentParser(prog="tenantry", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    parent = common_parent()
    registry_cli.add_commands(sub, parent)
    for module in ("training.cli", "engine.serve_cli", "engine.shadow_cli", "engine.loadtest.cli",
                   "engine.batch.cli", "engine.demo", "engine.console.cli", "engine.monitor.cli"):
        try:
            mod = __import__(module, fromlist=["add_commands"])
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                continue  # that part of tenantry is not installed in this build
            raise
        mod.add_commands(sub, parent)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tenantry`` script."""
    register_checks()
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except BrokenPipeError:
        # The reader went away (`tenantry registry list --json | head -1`). As the Python
        # docs advise: point stdout at devnull so the interpreter's last flush at exit does
        # not fail again, and exit 1 without a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is no file (embedded, captured)
            pass
        finally:
            os.close(devnull)
        return 1
    except TenantryError as exc:
        print(f"tenantry: error: {exc}", file=sys.stderr)
        return 2 if exc.status_code in (404, 409, 422) else 1
    except KeyboardInterrupt:
        print("tenantry: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
