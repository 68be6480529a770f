"""Which process owns a piece of work: ``host:pid`` names, and whether such a process is still alive.
The pipeline's stage attempts and the training runs record their owner this way, so that a task
the broker delivers twice (it delivers at least once) leaves work that is still running to it.
No Django: it is read by the orchestrator and by the training runs alike."""

from __future__ import annotations

import os
import socket


def worker_host() -> str:
    return socket.gethostname()[:200]


def worker_id() -> str:
    """This process as ``host:pid``."""
    return f"{worker_host()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def alive_here(worker: str) -> bool | None:
    """For a ``host:pid`` of this machine, whether that process is alive; None for another
    machine's (or a name that is not ``host:pid``), which only a heartbeat can tell."""
    host, _, pid = (worker or "").rpartition(":")
    if host != worker_host() or not pid.isdigit():
        return None
    return pid_alive(int(pid))
