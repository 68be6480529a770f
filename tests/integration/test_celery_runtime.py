"""A real Celery worker and beat, on the embedded broker or on Redis, against the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from investml.celery import app
from investml.tasks import ping

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


def _subprocess_env() -> dict[str, str]:
    """Environment that points a child process at this test run's database, broker and var dir."""
    db = connection.settings_dict
    env = dict(os.environ)
    if connection.vendor == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    else:
        auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
        env["DATABASE_URL"] = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env["INVESTML_VAR_DIR"] = str(settings.VAR_DIR)
    return env


def _start(args: list[str], log: Path) -> subprocess.Popen:
    handle = log.open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "investml", *args], cwd=REPO, env=_subprocess_env(),
        stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


@pytest.fixture
def worker(tmp_path):
    app.control.purge()
    log = tmp_path / "worker.log"
    process = _start(["worker", "--loglevel=INFO", "--concurrency=1", "--without-gossip", "--without-mingle",
                      "--hostname", f"test-{os.getpid()}@%h"], log)
    assert _wait_for(lambda: "ready." in log.read_text() or process.poll() is not None, 60), log.read_text()
    assert process.poll() is None, log.read_text()
    yield log
    _stop(process)


def test_configuration_is_safe_for_redelivery():
    conf = app.conf
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    # a restarted broker: reconnect for good, wait for the result backend, keep running tasks running,
    # put held messages back (investml/celery.py; tests/integration/test_redis_fault.py restarts one)
    assert conf.broker_connection_retry_on_startup and conf.broker_connection_max_retries is None
    assert conf.result_backend_always_retry and not conf.worker_cancel_long_running_tasks_on_connection_loss
    assert any(step.__name__ == "RequeueHeldMessages" for step in app.steps["consumer"])
    assert conf.beat_scheduler == "django_celery_beat.schedulers:DatabaseScheduler"
    expected = "redis://" if settings.REDIS_URL else "filesystem://"
    assert conf.broker_url.startswith(expected)


def test_worker_runs_a_task_through_the_broker(worker):
    banner = worker.read_text()
    assert ".> celery" in banner and ".> maintenance" in banner  # without --queues: every queue
    result = ping.delay()
    assert result.get(timeout=60) == {"pong": True, "database": connection.vendor, "db_ok": True}
    # the worker logs "succeeded" just after storing the result: wait for the line, don't race it
    line = f"Task investml.ping[{result.id}] succeeded"
    assert _wait_for(lambda: line in worker.read_text(), 10), worker.read_text()


def test_beat_sends_a_database_scheduled_task_that_the_worker_runs(worker, tmp_path):
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    task = PeriodicTask.objects.create(name="test ping", task="investml.ping", interval=every_second)
    beat_log = tmp_path / "beat.log"
    beat = _start(["beat", "--loglevel=INFO", "--schedule", str(tmp_path / "beat-schedule")], beat_log)
    try:
        assert _wait_for(lambda: "Sending due task test ping" in beat_log.read_text(), 90), beat_log.read_text()
        assert _wait_for(lambda: "Task investml.ping[" in worker.read_text()
                         and "succeeded" in worker.read_text(), 60), worker.read_text()
        # beat writes its run counts to the database when the schedule changes (else every 5 minutes, or
        # at exit, which raced the SIGTERM below): signal a change, and see the count stored while it runs
        PeriodicTasks.update_changed()
        assert _wait_for(lambda: PeriodicTask.objects.get(pk=task.pk).total_run_count >= 1, 30), (
            beat_log.read_text())
    finally:
        _stop(beat)


def test_maintenance_tasks_run_on_their_own_queue_and_worker(tmp_path):
    """The every-minute work is routed to the "maintenance" queue, which a worker started with
    --queues=maintenance (the Procfile's and compose's second worker) serves alone."""
    app.control.purge()
    log = tmp_path / "maintenance.log"
    maintenance = _start(["worker", "--queues=maintenance", "--loglevel=INFO", "--concurrency=1",
                          "--without-gossip", "--without-mingle", "--hostname", f"maint-{os.getpid()}@%h"], log)
    try:
        assert _wait_for(lambda: "ready." in log.read_text() or maintenance.poll() is not None, 60), log.read_text()
        result = app.send_task("training.pipeline.dispatch_queued")
        assert _wait_for(lambda: f"Task training.pipeline.dispatch_queued[{result.id}] succeeded" in log.read_text(),
                         60), log.read_text()
    finally:
        _stop(maintenance)
