"""The ``tenantry`` command line: every command's parsing, printing and exit codes.

The library packages (registry, training, engine's subsystems) return data; only this
package prints and exits.
"""

from __future__ import annotations

from engine.cli.app import build_parser, main, register_checks
from engine.cli.output import Reply, emit

__all__ = ["Reply", "build_parser", "emit", "main", "register_checks"]
