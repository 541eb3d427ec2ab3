"""Alias histories: a stack per (tenant, alias) that ``set`` pushes, ``rollback`` pops and
``clear`` empties.

:class:`AliasStack` is the value handed out. :class:`AliasStacks` holds every tenant's
stack of one alias without a Python object per tenant: the stacks share one array of nodes
(a version and the node below it), and each tenant has the number of its top node. A push
appends a node, a pop moves to the node below, so the stacks cost 4 bytes a tenant plus
12 bytes an event.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

__all__ = ["AliasStack", "AliasStacks"]

_NONE = -1


@dataclass
class AliasStack:
    """History of one alias: ``set`` pushes, ``rollback`` pops, ``clear`` empties."""

    versions: list[int] = field(default_factory=list)

    def apply(self, action: str, version: int | None) -> None:
        """Fold one alias event into the stack."""
        if action == "set" and version is not None:
            if not self.versions or self.versions[-1] != version:
                self.versions.append(version)
        elif action == "rollback":
            if len(self.versions) > 1:
                self.versions.pop()
        elif action == "clear":
            self.versions.clear()

    @property
    def current(self) -> int | None:
        """The version the alias points at now."""
        return self.versions[-1] if self.versions else None

    @property
    def previous(self) -> int | None:
        """Where a rollback would take the alias."""
        return self.versions[-2] if len(self.versions) > 1 else None


class AliasStacks:
    """Every tenant's stack of one alias, by tenant number (see the module docstring)."""

    def __init__(self) -> None:
        self._top = array("i")  # per tenant number: its top node, or -1 (empty stack)
        self._version = array("q")  # per node
        self._below = array("i")  # per node: the node under it, or -1

    def apply(self, tenant: int, action: str, version: int | None) -> None:
        """Fold one event of tenant number ``tenant`` into its stack (as AliasStack.apply)."""
        if tenant >= len(self._top):
            self._top.extend([_NONE] * (tenant + 1 - len(self._top)))
        top = self._top[tenant]
        if action == "set" and version is not None:
            if top == _NONE or self._version[top] != version:
                self._version.append(version)
                self._below.append(top)
                self._top[tenant] = len(self._version) - 1
        elif action == "rollback":
            if top != _NONE and self._below[top] != _NONE:
                self._top[tenant] = self._below[top]
        elif action == "clear":
            self._top[tenant] = _NONE

    def current(self, tenant: int) -> int | None:
        """The version the alias of tenant number ``tenant`` points at, or None."""
        top = self._top[tenant] if tenant < len(self._top) else _NONE
        return None if top == _NONE else self._version[top]

    def stack(self, tenant: int) -> AliasStack:
        """The tenant's stack as an :class:`AliasStack` (bottom first)."""
        node = self._top[tenant] if tenant < len(self._top) else _NONE
        versions = []
        while node != _NONE:
            versions.append(self._version[node])
            node = self._below[node]
        return AliasStack(versions[::-1])
