"""``at_process_exit`` runs its callback when a multiprocessing child ends, as the API server's
workers do (they end with ``os._exit``, which skips ``atexit``), and when a plain process ends."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

from investml.process_exit import at_process_exit

REPO = Path(__file__).resolve().parents[2]


def _child(marker: str) -> None:
    at_process_exit(lambda: Path(marker).write_text("flushed"))


def test_the_callback_runs_when_a_forked_worker_process_ends(tmp_path):
    marker = tmp_path / "child"
    process = multiprocessing.get_context("fork").Process(target=_child, args=(str(marker),))
    process.start()
    process.join(30)
    assert process.exitcode == 0
    assert marker.read_text() == "flushed"


def test_the_callback_runs_when_a_plain_process_exits(tmp_path):
    marker = tmp_path / "plain"
    code = ("import sys; from pathlib import Path; from investml.process_exit import at_process_exit; "
            f"at_process_exit(lambda: Path({str(marker)!r}).open('a').write('x'))")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
    assert marker.read_text() in ("x", "xx")  # atexit, and multiprocessing's own exit hook where it ran
