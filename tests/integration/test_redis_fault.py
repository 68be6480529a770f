"""Redis restarted while a pipeline runs (issue 15, reliability): the run finishes and no queued run is
lost. A private ``redis-server`` (a free port, a temporary folder, persistence as docker-compose.yml
configures it: ``--appendonly yes``) is the broker, result backend, cache and limit store of a real
Celery worker; the test kills it (SIGKILL, a crash) while the run trains (the worker holds the run's
countdown poll in memory, a second run's first task waits on the queue) and starts it again on the
same port. The system Redis (6379, CI's) is never touched."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.integration.test_celery_runtime import _subprocess_env
from tests.integration.test_orchestrator_celery import tiny_market  # noqa: F401 - a fixture
from tests.servers import free_port, wait_until
from training.models import PipelineRun, PipelineStage, TrainingRun
from training.orchestrator.stages import STAGES

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


class PrivateRedis:
    """A redis-server of this test only, configured as docker-compose.yml's (append-only file on)."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (apt-get install redis-server); this test needs it"
        self.binary, self.folder, self.port = binary, folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.folder / f"redis-{self.starts}.log").open("w")
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "everysec", "--daemonize", "no", "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        assert wait_until(lambda: self._pings(client), 20), self.log()

    @staticmethod
    def _pings(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM (``docker compose restart redis``: Redis flushes its append-only file and closes
        its clients) or SIGKILL (a crash: what Redis wrote to its file is all that survives)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return "".join(p.read_text()[-2000:] for p in sorted(self.folder.glob("redis-*.log")))


@pytest.fixture
def private_redis(tmp_path):
    folder = tmp_path / "redis"
    folder.mkdir()
    server = PrivateRedis(folder)
    server.start()
    yield server
    server.stop()


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "investml", "worker", "--loglevel=INFO", "--concurrency=2",
         "--without-gossip", "--without-mingle", "--hostname", f"redis-fault-{os.getpid()}@%h"],
        cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    assert wait_until(lambda: "ready." in log.read_text() or process.poll() is not None, 90), log.read_text()
    assert process.poll() is None, log.read_text()
    return process


def _holds_a_poll(text: str) -> bool:
    """The worker received a retried ``await_training`` (due in a second) and has not run it yet."""
    lines = [line for line in text.splitlines() if "training.pipeline.await_training[" in line]
    return len(lines) >= 3 and lines[-1].endswith("received") and "retry: Retry in" in lines[-2]


def _request_runs(env: dict[str, str], *runs: list[str]) -> list[int]:
    """``run_pipeline`` once per argument list (queued on Celery, through the private Redis), all from
    one ``manage.py`` process, milliseconds apart: the first run still holds the only slot when the
    next is requested (on a loaded machine a second ``manage.py`` can start later than the tiny
    training ends). The runs' ids."""
    code = ("import io, json\nfrom django.core.management import call_command\nids = []\n"
            f"for args in {json.dumps(list(runs))}:\n"
            "    out = io.StringIO()\n"
            "    call_command('run_pipeline', *args, '--json', stdout=out)\n"
            "    ids.append(json.loads(out.getvalue().strip().splitlines()[-1])['id'])\n"
            "print(json.dumps(ids))\n")
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return [int(pk) for pk in json.loads(done.stdout.strip().splitlines()[-1])]


def test_a_redis_restart_mid_run_loses_no_run(private_redis, tiny_market, tmp_path):  # noqa: F811
    env = {**_subprocess_env(), **tiny_market, "REDIS_URL": private_redis.url,
           # the reaper must not be what rescues a run here: a lost message would show as a stuck run
           "ML_PIPELINE_HEARTBEAT_TIMEOUT_SECONDS": "600",
           # the run's training poll waits on the worker as a countdown message most of the time; polled
           # every second so that one is held within the tiny training's few seconds however fast it runs
           "ML_PIPELINE_POLL_SECONDS": "1",
           # one feature task (the chunked build has its own test, test_orchestrator_celery.py)
           "ML_PIPELINE_FEATURE_CHUNK_TICKERS": "500"}
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        env.pop(name, None)
    config = Path(tiny_market["ML_PIPELINE_CONFIG"])
    values = json.loads(config.read_text())
    values["orchestrator"]["max_concurrent_pipelines"] = 1  # the second run waits queued
    config.write_text(json.dumps(values))
    log = tmp_path / "worker.log"
    worker = _worker(env, log)
    started = time.monotonic()
    try:
        first, second = _request_runs(
            env, ["--models", "xgboost_classifier,prophet_forecaster", "--reason", "redis restart"],
            ["--tickers", "AAPL", "--noop", "0.2", "--reason", "queued behind the first"])
        assert PipelineRun.objects.get(pk=second).status == PipelineRun.Status.QUEUED, (
            list(PipelineRun.objects.filter(pk__in=[first, second]).values("pk", "status", "current_stage")),
            log.read_text()[-5000:])

        def training() -> bool:
            t = TrainingRun.objects.filter(requested_by=f"pipeline run {first}").first()
            return t is not None and t.status == TrainingRun.Status.RUNNING

        assert wait_until(training, 120), log.read_text()[-5000:]
        # kill while the worker holds the run's next training poll (a countdown message it received)
        assert wait_until(lambda: _holds_a_poll(log.read_text()), 60, every=0.05), log.read_text()[-5000:]
        private_redis.stop(signal.SIGKILL)
        restarted_at = time.monotonic()
        time.sleep(3.0)  # down long enough that nothing reaches it while the worker reconnects
        private_redis.start()

        def finished() -> bool:
            return PipelineRun.objects.filter(pk__in=[first, second], status__in=PipelineRun.FINISHED).count() == 2

        assert wait_until(finished, 90, every=0.5), (
            list(PipelineRun.objects.filter(pk__in=[first, second]).values("pk", "status", "current_stage", "error")),
            log.read_text()[-8000:])
        recovered = time.monotonic() - restarted_at
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    text = log.read_text()
    assert "Connection to broker lost" in text, text[-5000:]
    assert "this worker held put back on their queues" in text, text[-5000:]  # the poll it held
    for pk in (first, second):
        run = PipelineRun.objects.get(pk=pk)
        assert run.status == PipelineRun.Status.SUCCEEDED, (pk, run.error, text[-5000:])
        names = list(run.stages.filter(status="succeeded").order_by("position").values_list("name", flat=True))
        assert names == list(STAGES), (pk, names)
        # each stage ran once: nothing was lost and redone, nothing delivered twice
        assert PipelineStage.objects.filter(run=run).count() == len(STAGES), \
            list(run.stages.values_list("name", "attempt", "status", "error"))
    print(f"both runs succeeded {recovered:.1f}s after the restart; {time.monotonic() - started:.1f}s in all")
