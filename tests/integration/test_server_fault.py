"""An API server worker killed with SIGKILL under load (issue 15, reliability): the server replaces
it, the other worker keeps serving, and the failed requests are counted and few. The real server
(``python -m investml.serve``) on a free port, against this test run's database."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.integration.test_celery_runtime import _subprocess_env
from tests.servers import api_server, free_port, stop_server, wait_until

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


def _workers(master: psutil.Process) -> set[int]:
    return {child.pid for child in master.children() if child.is_running()}


def test_a_worker_killed_under_load_is_replaced_and_few_requests_fail(tmp_path):
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    server = api_server(cwd=REPO, env={**_subprocess_env(), "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost"},
                        port=port, workers=2, log=log)
    url = f"http://127.0.0.1:{port}/metrics"  # cheap: the kill, not the database, is under test
    try:
        def answers() -> bool:
            try:
                return requests.get(url, timeout=10).status_code == 200
            except requests.RequestException:
                return False

        assert wait_until(answers, 60, every=0.3), (tmp_path / "server.log").read_text()[-3000:]
        master = psutil.Process(server.pid)
        assert wait_until(lambda: len(_workers(master)) == 2, 30), (tmp_path / "server.log").read_text()[-3000:]
        before = _workers(master)

        results: list[int] = []
        stop = threading.Event()

        def load() -> None:
            with requests.Session() as session:
                while not stop.is_set():
                    try:
                        results.append(session.get(url, timeout=10).status_code)
                    except requests.RequestException:
                        results.append(0)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        victim = sorted(before)[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = len(results)
        replaced = wait_until(lambda: len(_workers(master)) == 2 and victim not in _workers(master), 30)
        time.sleep(2.0)
        stop.set()
        for thread in threads:
            thread.join(10)

        assert replaced and master.is_running(), (tmp_path / "server.log").read_text()[-3000:]
        assert _workers(master) - before  # a new worker process
        failed = sum(1 for code in results if code != 200)
        assert len(results) > 50 and failed <= max(4, len(results) // 50), (failed, len(results))
        after = results[killed_at + 20:]
        assert after and all(code == 200 for code in after[-20:])  # serving again
        print(f"{len(results)} requests, {failed} failed around the kill")
    finally:
        stop_server(server, log)
