"""PostgreSQL restarted while the API serves (issue 15, reliability): requests that need the database
answer 503 JSON with the reason during the outage, never a 500 or a dropped connection, and every
route serves again once it is back; no served prediction is lost (each has its log row).

A private PostgreSQL cluster of this test (initdb in a temporary folder, a free port, trust
authentication, run as the ``postgres`` user when the test runs as root) holds a migrated database
with one served model; the real API server (two workers) serves the project's WSGI application on it
under load while the cluster is stopped with ``pg_ctl stop -m immediate`` (a crash: recovery on the
next start) and started again. The system PostgreSQL (5432, CI's) is never touched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import psycopg
import pytest
import requests

from tests.servers import api_server, free_port, stop_server, wait_until

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow]
INSTALL_HINT = ("this test needs the PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql "
                "(Debian/Ubuntu), or put their folder on PATH")

# Builds the database the server uses: the schema, two sample tickers' bars and features, a tiny
# XGBoost version promoted, and an API user; prints the user's token.
SETUP = r"""
import json, sys
from pathlib import Path
import django
django.setup()
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from features.selectors import training_frame
from tests.served_registry import HORIZON, ingest_and_build, register
from training.learners.xgb import XGBoostLearner
call_command("migrate", interactive=False, verbosity=0)
fsv = ingest_and_build(tickers=("AAPL", "MSFT"), workdir=Path(sys.argv[1]))
frame = training_frame(feature_set_version=fsv, horizons=(HORIZON,))
learner = XGBoostLearner(n_estimators=10, max_depth=3, n_jobs=1)
learner.fit(frame, feature_columns=list(fsv.feature_names), horizon=HORIZON)
register(name="xgboost_classifier", data=learner.to_bytes(), fsv=fsv)
user = get_user_model().objects.create_user("pg-fault")
print(json.dumps({"token": Token.objects.create(user=user).key}))
"""


def _server_binaries() -> Path:
    """The folder of initdb and pg_ctl: Debian's /usr/lib/postgresql/<version>/bin, else PATH."""
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
                         if p.parent.name.isdigit() else 0, reverse=True):
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(initdb).parent
    pytest.fail(f"initdb/pg_ctl not found: {INSTALL_HINT}")


class PrivatePostgres:
    """A PostgreSQL cluster of this test only. PostgreSQL refuses to run as root: as root, the
    cluster belongs to and runs as the ``postgres`` user."""

    def __init__(self) -> None:
        self.bin = _server_binaries()
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="investml-pg-"))  # under /tmp: reachable by postgres
        self.data, self.log = self.folder / "data", self.folder / "server.log"
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            assert runuser, "running as root needs runuser to start PostgreSQL as the postgres user"
            try:
                shutil.chown(self.folder, user="postgres")
            except LookupError:
                pytest.fail(f"running as root, PostgreSQL needs a 'postgres' user to run as: {INSTALL_HINT}")
            self.prefix = [runuser, "-u", "postgres", "--"]
        self.url = f"postgres://investml@127.0.0.1:{self.port}/investml"

    def _run(self, *args: str, timeout: float = 60) -> str:
        done = subprocess.run([*self.prefix, *args], capture_output=True, text=True, timeout=timeout,
                              cwd=self.folder)
        assert done.returncode == 0, f"{' '.join(args)}: {done.stdout}{done.stderr}{self.server_log()}"
        return done.stdout

    def server_log(self) -> str:
        try:
            return self.log.read_text()[-3000:]
        except OSError:
            return ""

    def create(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "investml", "--auth=trust",
                  "--encoding=UTF8", "--no-sync", timeout=120)
        self.start()
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=investml dbname=postgres",
                             autocommit=True) as conn:
            conn.execute("CREATE DATABASE investml")

    def start(self) -> None:
        # fsync off: the test stops the server process, never the machine, so the OS keeps every write
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", "60", "start", timeout=90)

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", timeout=90)

    def remove(self) -> None:
        subprocess.run([*self.prefix, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60, cwd="/")
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def private_postgres():
    cluster = PrivatePostgres()
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.remove()


def test_a_postgres_restart_answers_503_then_recovers_and_loses_no_prediction(private_postgres, tmp_path):
    env = {key: value for key, value in os.environ.items()
           if key not in ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")}  # embedded cache, broker
    env.update({
        "DATABASE_URL": private_postgres.url, "INVESTML_VAR_DIR": str(tmp_path / "var"),
        "ML_FEATURES_PATH": str(tmp_path / "features"), "ML_MODELS_PATH": str(tmp_path / "models"),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost", "CACHE_KEY_PREFIX": f"pg-fault-{uuid.uuid4().hex[:8]}",
        "ML_PREDICTION_LOG_MAX_AGE_SECONDS": "0.5",
    })
    started = time.monotonic()
    setup = subprocess.run([sys.executable, "-c", SETUP, str(tmp_path / "work")], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
    assert setup.returncode == 0, setup.stderr[-5000:]
    token = json.loads(setup.stdout.strip().splitlines()[-1])["token"]
    prepared = time.monotonic() - started

    port = free_port()
    log = (tmp_path / "server.log").open("w")
    server = api_server(cwd=REPO, env=env, port=port, workers=2, log=log)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Token {token}"}
    predict = (f"{base}/predict", {"ticker": "AAPL", "model_name": "xgboost_classifier"})
    versions = f"{base}/models/xgboost_classifier/versions"  # a database read on every request
    results: list[tuple[float, str, int, dict | None]] = []  # (time, route, status, JSON body)
    phase = {"name": "before"}
    stop = threading.Event()

    def load(route: str) -> None:
        with requests.Session() as session:
            session.headers.update(headers)
            while not stop.is_set():
                try:
                    if route == "predict":
                        response = session.post(predict[0], json=predict[1], timeout=15)
                    else:
                        response = session.get(versions, timeout=15)
                    try:
                        body = response.json()
                    except ValueError:
                        body = None
                    results.append((time.monotonic(), f"{phase['name']}:{route}", response.status_code, body))
                except requests.RequestException as exc:  # a dropped connection: never acceptable
                    results.append((time.monotonic(), f"{phase['name']}:{route}", 0, {"error": str(exc)}))
                time.sleep(0.02)

    try:
        def ready() -> bool:
            try:
                return requests.get(versions, headers=headers, timeout=5).status_code == 200
            except requests.RequestException:
                return False

        assert wait_until(ready, 60, every=0.3), (tmp_path / "server.log").read_text()[-3000:]
        threads = [threading.Thread(target=load, args=(route,)) for route in ("predict", "predict", "versions")]
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        phase["name"] = "down"
        private_postgres.stop("immediate")  # a crash: no checkpoint, recovery at the next start
        down_at = time.monotonic()
        time.sleep(3.0)
        phase["name"] = "restarting"
        restart_at = time.monotonic()  # PostgreSQL accepts connections before `pg_ctl start` returns
        private_postgres.start()
        phase["name"] = "after"
        up_at = time.monotonic()

        def serving_again() -> bool:
            recent = [r for r in results if r[0] > up_at]
            return {route for _, route, status, _ in recent if status == 200} >= {"after:predict",
                                                                                  "after:versions"}

        assert wait_until(serving_again, 30), Counter((r[1], r[2]) for r in results)
        recovered = time.monotonic() - up_at
        time.sleep(2.0)
        stop.set()
        for thread in threads:
            thread.join(20)
    finally:
        stop.set()
        stop_server(server, log)  # graceful: each worker writes its buffered prediction logs
    server_log = (tmp_path / "server.log").read_text()
    counts = Counter((route, status) for _, route, status, _ in results)

    # before: everything served
    assert counts[("before:predict", 200)] > 5 and counts[("before:versions", 200)] > 2, counts
    assert not [r for r in results if r[1].startswith("before:") and r[2] != 200], counts
    # never a 500, never a dropped connection; a failure is the 503 with its reason
    assert not [r for r in results if r[2] in (0, 500)], ([r for r in results if r[2] in (0, 500)][:5], counts)
    failed = [r for r in results if r[2] != 200]
    for _, route, status, body in failed:
        assert status == 503 and body and body.get("reason") == "database unavailable", (route, status, body)
    # while it was down, the database read could not be served
    down = [r for r in results if down_at + 0.5 < r[0] < restart_at and r[1].endswith(":versions")]
    assert down and all(r[2] == 503 for r in down), Counter(r[2] for r in down)
    # after: everything served again
    tail = [r for r in results if r[0] > up_at + recovered + 0.5]
    assert tail and all(r[2] == 200 for r in tail), Counter((r[1], r[2]) for r in tail)
    assert "Traceback" not in server_log, server_log[-3000:]

    # nothing lost: every prediction answered 200 has its log row, written once the database was back
    served = sum(1 for r in results if r[1].endswith(":predict") and r[2] == 200)
    with psycopg.connect(f"host=127.0.0.1 port={private_postgres.port} user=investml dbname=investml") as conn:
        logged = conn.execute("SELECT count(*) FROM inference_predictionlog").fetchone()[0]
    assert logged == served, (logged, served, server_log[-3000:])
    print(f"setup {prepared:.1f}s; {len(results)} requests: {dict(counts)}; served again {recovered:.1f}s after the "
          f"restart; {logged} predictions logged")
