"""The `tenantry` command line: a thin argparse front over the library.

Each command module contributes its sub-commands through ``add_commands(sub, parent)``; a
command's handler gets the parsed arguments and the environment (read once, here) and
returns a :class:`~engine.cli.output.Reply`, which :func:`main` prints as text or, with
``--json``, as one JSON document on stdout. Errors the user can fix are printed as one line
on stderr with a non-zero exit: 2 for a bad request (422), an unknown name (404) or a
conflict (409), 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from engine.cli import (
    console,
    demo,
    loadtest,
    monitor,
    registry,
    score,
    serve,
    shadow,
    training,
)
from engine.cli.output import Handler, Reply, common_parent, emit
from engine.errors import http_status
from registry.errors import TenantryError
from registry.settings import RegistrySettings

__all__ = ["build_parser", "main", "register_checks"]

_COMMANDS = (registry, training, serve, shadow, loadtest, score, demo, console, monitor)
_USER_ERRORS = (404, 409, 422)


def register_checks() -> None:
    """Wire serving's publish-time self-check into training (which must not import
    engine): every model a training run in this process publishes records whether its
    compiled forest predicts like XGBoost, so loads need not check it again."""
    from engine.serving.model import publish_check
    from training.checks import register_artifact_check

    register_artifact_check(publish_check)


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """Build the full parser with every command.

    Args:
        environ: the environment ``--registry`` defaults from (``TENANTRY_REGISTRY``);
            default: this process's.
    """
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="tenantry", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    parent = common_parent(RegistrySettings.from_env(env).root)
    for module in _COMMANDS:
        module.add_commands(sub, parent)
    return parser


def _run(handler: Handler, args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    answer = handler(args, environ)
    if isinstance(answer, Reply):
        emit(args, answer.document, answer.text)
        return answer.code
    return answer


def _quiet_broken_pipe() -> int:
    # The reader went away (`tenantry registry list --json | head -1`). As the Python docs
    # advise: point stdout at devnull so the interpreter's last flush at exit does not fail
    # again, and exit 1 without a traceback.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no file (embedded, captured)
        pass
    finally:
        os.close(devnull)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tenantry`` script: the only place that reads the environment."""
    environ = dict(os.environ)
    register_checks()
    args = build_parser(environ).parse_args(argv)
    try:
        return _run(args.handler, args, environ)
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except TenantryError as exc:
        print(f"tenantry: error: {exc}", file=sys.stderr)
        return 2 if http_status(exc) in _USER_ERRORS else 1
    except KeyboardInterrupt:
        print("tenantry: interrupted", file=sys.stderr)
        return 130
