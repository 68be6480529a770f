"""Which process owns a piece of work: ``host:pid`` names, whether such a process is still alive,
and the heartbeat thread that tells other machines so. The pipeline's stage attempts and the
training runs record their owner this way, so that a task the broker delivers twice (it delivers at
least once) leaves work that is still running to it, on this machine or another.
No Django: it is read by the orchestrator and by the training runs alike."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

logger = logging.getLogger(__name__)


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


def owner_alive(*, worker: str, heartbeat_at: datetime | None, now: datetime, timeout: float) -> bool:
    """Whether the process ``worker`` (``host:pid``) may still be at its work: its heartbeat is younger
    than ``timeout`` seconds and, on this machine, the process exists. A process of another machine
    cannot be asked, and a machine that is gone stops beating. On this machine a process that exists
    is not enough: a restarted container keeps its host name and often hands its new processes the
    same pids, so a stale heartbeat means a recycled pid (or a process stuck for ``timeout``). With
    no heartbeat yet, only the process tells."""
    fresh = heartbeat_at is not None and (now - heartbeat_at).total_seconds() <= timeout
    here = alive_here(worker)
    if here is None:
        return fresh
    return here and (fresh or heartbeat_at is None)


@contextmanager
def beating(beat: Callable[[], object], *, interval: float, name: str,
            finish: Callable[[], object]) -> Iterator[None]:
    """Call ``beat`` every ``interval`` seconds from a daemon thread while the block runs. A beat
    that fails is logged and the next one retries. The thread calls ``finish`` last, to release
    what it holds (``training.runs.database_heartbeat`` closes its database connection)."""
    stop = threading.Event()

    def run() -> None:
        try:
            while not stop.wait(interval):
                try:
                    beat()
                except Exception:  # noqa: BLE001 - a missed beat is not fatal; the next one retries
                    logger.warning("%s failed", name, exc_info=True)
        finally:
            finish()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
