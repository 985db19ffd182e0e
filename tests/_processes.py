"""The processes below a process, read from /proc (Linux): tests find a Ray task's worker by the
title Ray gives it while the task runs (``ray::<function>``) and kill it mid-task."""

from __future__ import annotations

from pathlib import Path


def descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every process below ``pid``; processes that exit meanwhile are skipped."""
    parents, commands = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])  # the field after "(name) state"
        commands[int(entry.name)] = command.replace(b"\0", b" ").decode(errors="replace")
    below, frontier = {}, {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        below.update((child, commands[child]) for child in frontier)
    return below


def running_task(pid: int, function: str) -> list[int]:
    """Processes below ``pid`` that run a Ray task of ``function`` right now."""
    return [p for p, command in descendants(pid).items() if command.startswith(f"ray::{function}")]
