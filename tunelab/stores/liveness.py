"""Whether the process that owns a run is still alive: pid + its start time + host.

A pid alone is not enough (pids are reused after a reboot or a long uptime), so the process's
start time from /proc is stored with it; a run started on another host cannot be checked by pid,
so there the heartbeat decides (no beat for `STALE_AFTER_S` means the process is gone).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

STALE_AFTER_S = 600.0
"""A run on another host whose heartbeat is older than this is taken as interrupted."""


@dataclass(frozen=True)
class ProcessId:
    pid: int
    start: str
    """The kernel's start time of the process (clock ticks since boot), '' where /proc is missing."""
    host: str


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat; '' where there is no /proc; None when the pid does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return None if os.path.isdir("/proc") else ""
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # fields after the ")"-terminated command name


def current() -> ProcessId:
    pid = os.getpid()
    return ProcessId(pid, start_time(pid) or "", socket.gethostname())


def alive(process: ProcessId, heartbeat_at: str | None) -> bool:
    """Whether `process` still runs (checked by pid and start time on this host, by heartbeat elsewhere)."""
    if process.host != socket.gethostname():
        if not heartbeat_at:
            return True  # nothing to go by: never call a run on another machine dead without evidence
        beat = datetime.fromisoformat(heartbeat_at)
        return (datetime.now(UTC) - beat).total_seconds() < STALE_AFTER_S
    started = start_time(process.pid)
    if started is None:
        return False
    if started == "" or process.start == "":
        try:
            os.kill(process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return started == process.start and not _zombie(process.pid)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
