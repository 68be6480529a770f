"""``training.processes``: who owns a piece of work, and the heartbeat thread (no Django)."""

from __future__ import annotations

import logging
import subprocess
import threading
from datetime import UTC, datetime, timedelta

from training.processes import beating, owner_alive, worker_host, worker_id

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_a_process_of_this_machine_is_asked_and_every_owner_goes_by_its_heartbeat():
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        live = f"{worker_host()}:{sleeper.pid}"
        assert owner_alive(worker=live, heartbeat_at=None, now=NOW, timeout=600)
    finally:
        sleeper.kill()
        sleeper.wait()
    fresh = NOW - timedelta(seconds=10)
    # gone here: dead whatever its heartbeat says
    assert not owner_alive(worker=live, heartbeat_at=fresh, now=NOW, timeout=600)
    assert owner_alive(worker=worker_id(), heartbeat_at=None, now=NOW, timeout=600)
    assert owner_alive(worker=worker_id(), heartbeat_at=NOW - timedelta(seconds=600), now=NOW, timeout=600)
    # alive here but silent past the timeout: a pid handed to a new process (a restarted container)
    assert not owner_alive(worker=worker_id(), heartbeat_at=NOW - timedelta(seconds=601), now=NOW, timeout=600)
    other = "another-machine.example:4242"
    assert owner_alive(worker=other, heartbeat_at=fresh, now=NOW, timeout=600)
    assert owner_alive(worker=other, heartbeat_at=NOW - timedelta(seconds=600), now=NOW, timeout=600)
    assert not owner_alive(worker=other, heartbeat_at=NOW - timedelta(seconds=601), now=NOW, timeout=600)
    assert not owner_alive(worker=other, heartbeat_at=None, now=NOW, timeout=600)
    assert not owner_alive(worker="", heartbeat_at=None, now=NOW, timeout=600)  # runs from before owners


def test_beating_calls_the_beat_until_the_block_ends_survives_a_failed_beat_and_finishes_once(caplog):
    beats, finished, second = [], [], threading.Event()

    def beat() -> None:
        beats.append(threading.current_thread().name)
        if len(beats) == 1:
            raise ConnectionError("database gone for a moment")
        second.set()

    with caplog.at_level(logging.WARNING, logger="training.processes"):
        with beating(beat, interval=0.01, name="heartbeat of test run 7", finish=lambda: finished.append(True)):
            assert second.wait(10)  # the failed first beat did not stop the thread
    count = len(beats)
    assert count >= 2 and set(beats) == {"heartbeat of test run 7"}
    assert finished == [True]
    assert [r.getMessage() for r in caplog.records] == ["heartbeat of test run 7 failed"]
    assert caplog.records[0].exc_info[0] is ConnectionError
    second.clear()
    assert not second.wait(0.1) and len(beats) == count  # no beat after the block
