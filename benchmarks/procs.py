"""Processes of this box, from ``/proc``: identity, command line, CPU seconds (the
benchmarks' accounting of who used the cores during a stage)."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

__all__ = ["CLK_TCK", "Proc", "box_busy_s", "cmdline", "cpu_by_process", "cpu_seconds",
           "descendants", "pid_cpu_seconds", "proc_stat", "process"]

CLK_TCK = os.sysconf("SC_CLK_TCK")


class Proc(NamedTuple):
    """A process, identified by pid and start time (so a reused pid is not mistaken)."""

    pid: int
    start: int


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/pid/stat from the state on (index 0 = field 3), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _cpu(st: list[str]) -> float:
    """utime + stime (s) from :func:`proc_stat` fields."""
    return (int(st[11]) + int(st[12])) / CLK_TCK


def process(pid: int) -> Proc | None:
    """The live process ``pid`` (None if gone)."""
    st = proc_stat(pid)
    return Proc(pid, int(st[19])) if st else None


def cmdline(pid: int) -> str:
    """The command line of ``pid``, arguments joined by spaces ('' if gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def descendants(root: int) -> list[Proc]:
    """Every live process below ``root`` (children, their children, ...)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st:
                children[int(st[1])].append(int(entry))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            proc = process(child)
            if proc:
                out.append(proc)
                todo.append(child)
    return out


def cpu_seconds(proc: Proc) -> float | None:
    """utime + stime of a process (all its threads), or None if it is gone or not it."""
    st = proc_stat(proc.pid)
    if st is None or int(st[19]) != proc.start:
        return None
    return _cpu(st)


def pid_cpu_seconds(pid: int | None) -> float:
    """utime + stime of a local process (s); nan if there is none."""
    st = proc_stat(int(pid)) if pid else None
    return _cpu(st) if st else float("nan")


def cpu_by_process() -> dict[str, float]:
    """CPU seconds so far of every process of this box, summed by command name."""
    out: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        st = proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if st is None:
            continue
        try:
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue  # ended meanwhile
        out[name] = out.get(name, 0.0) + _cpu(st)
    return out


def box_busy_s() -> float:
    """CPU seconds every core of this box spent busy (not idle or iowait) so far."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK
