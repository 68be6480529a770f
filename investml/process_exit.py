"""Work that must run when a process ends, whichever way the project's processes end.

``atexit`` covers a process that exits normally (manage.py, Celery). The API server's workers are
processes that multiprocessing forks (``investml.serve``): they end with ``os._exit`` right after
multiprocessing's exit finalizers, which skips ``atexit``. So a callback is registered both ways;
in a plain process both run, so each callback must be harmless the second time (a flush of an empty
buffer).
"""

from __future__ import annotations

import atexit
from collections.abc import Callable
from multiprocessing import util


def at_process_exit(callback: Callable[[], object]) -> None:
    """Run ``callback`` when this process ends: at interpreter exit and at a multiprocessing child's."""
    atexit.register(callback)
    util.Finalize(None, callback, exitpriority=10)
