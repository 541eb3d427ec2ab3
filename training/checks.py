"""Checks run on every trained artifact before it is published, injected from outside.

Training does not import the code that serves its models; whoever composes the program
(``engine.cli``) registers a check here, the job hands the registered callables to its
bucket tasks (they pickle by reference to their module), and each trained tenant's
artifact bytes and Booster go through them. A check returns index columns for the
version's row, e.g. ``{"forest_check": "1"}`` (see :data:`CHECK_COLUMNS`), or a
:class:`CheckResult` that also carries files to stage beside the artifact in the version's
directory (e.g. the compiled form of the model, so loading it skips compiling); a check
that raises records nothing, so the row's columns stay null (unchecked).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from registry.ids import COMPANION_NAME

__all__ = [
    "CHECK_COLUMNS", "ArtifactCheck", "CheckResult", "register_artifact_check",
    "registered_checks", "run_artifact_checks",
]


@dataclass(frozen=True)
class CheckResult:
    """What checks record for one artifact: index columns, and files staged beside it."""

    columns: dict[str, str | None] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict, repr=False)
    """File name (in the version's directory) -> its bytes; see
    :data:`registry.ids.COMPANION_NAME`."""


ArtifactCheck = Callable[[bytes, Any], Mapping[str, str | None] | CheckResult]
"""``check(artifact_bytes, booster) -> {column: value}`` or a :class:`CheckResult`; the
Booster is the trained one."""

CHECK_COLUMNS = frozenset({"forest_check"})
"""Index columns of a version (``registry.NewVersion`` fields) a check may set."""

_REGISTERED: list[ArtifactCheck] = []
log = logging.getLogger(__name__)


def register_artifact_check(check: ArtifactCheck) -> None:
    """Run ``check`` on every artifact the training job trains in this process from now on.

    Registering the same callable again does nothing. It must be picklable (a module-level
    function): the job ships it to its Ray Data tasks.

    Args:
        check: the check.
    """
    if check not in _REGISTERED:
        _REGISTERED.append(check)


def registered_checks() -> tuple[ArtifactCheck, ...]:
    """The checks registered so far, in registration order."""
    return tuple(_REGISTERED)


def run_artifact_checks(checks: Iterable[ArtifactCheck], data: bytes,
                        booster: Any) -> CheckResult:
    """The index columns and files ``checks`` record for one artifact.

    A check that raises, a column not in :data:`CHECK_COLUMNS` and a file whose name is
    not a :data:`~registry.ids.COMPANION_NAME` are logged and left out: a broken check must not fail
    training, and a column left out is null (unchecked).

    Args:
        checks: the checks to run.
        data: the artifact's UBJSON bytes, as staged.
        booster: the trained ``xgboost.Booster`` those bytes were saved from.

    Returns:
        Columns -> value and file name -> bytes (a later check's value wins).
    """
    out = CheckResult()
    for check in checks:
        try:
            got = check(data, booster)
            found = got if isinstance(got, CheckResult) else CheckResult(dict(got))
        except Exception:
            log.warning("artifact check %r failed; its columns stay null", check,
                        exc_info=True)
            continue
        for name, value in found.columns.items():
            if name in CHECK_COLUMNS:
                out.columns[name] = None if value is None else str(value)
            else:
                log.warning("artifact check %r set unknown column %r; ignored", check, name)
        for name, blob in found.files.items():
            if COMPANION_NAME.fullmatch(name) and isinstance(blob, bytes):
                out.files[name] = blob
            else:
                log.warning("artifact check %r wrote file %r; ignored", check, name)
    return out
