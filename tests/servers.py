"""Helpers of the tests that start real servers (PostgreSQL, Redis, the API server) as subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the system's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, every: float = 0.2) -> bool:
    """Whether ``predicate()`` came true within ``timeout`` seconds, asked every ``every`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def api_server(*, cwd: Path, env: dict[str, str], port: int, workers: int, log: IO[str]) -> subprocess.Popen:
    """The API server as the Procfile and the Dockerfile start it (``python -m investml.serve``), on
    127.0.0.1:``port``, in its own session (stop it with ``os.killpg``)."""
    return subprocess.Popen(
        [sys.executable, "-m", "investml.serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), "--no-access-log", "--log-level", "warning"],
        cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def stop_server(server: subprocess.Popen, log: IO[str], *, timeout: float = 30) -> None:
    """Stop a server started by ``api_server``: SIGTERM to its session (graceful: each worker writes
    its buffered prediction logs), SIGKILL after ``timeout`` seconds; then close its log."""
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
    log.close()
