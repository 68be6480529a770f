"""Two machines, simulated (issue 14, item 5): processes with separate local folders (their own
INVESTML_VAR_DIR, logs, working directory) that share only the database, Redis when REDIS_URL is
set, and an S3 server on loopback (ML_MODELS_PATH and ML_FEATURES_PATH = s3://...).

Machine A runs the daily pipeline (``run_pipeline --sync``: a few sample tickers from its file drop,
features, XGBoost walk-forward, registry version, promotion gate, batch predictions, drift check).
Machine B serves ``POST /predict`` by ticker from the real API server and writes the daily predictions of
every ticker again (``manage.py predict_universe``, A's rows deleted first). B never saw A's folder:
the features and the model come from the object store, the registry from the database. Neither
folder holds a Parquet or artifact file afterwards; everything is in the bucket."""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.db import connection

from features.models import Ticker
from inference.models import DailyPrediction
from registry.models import ModelVersion
from tests.integration.test_inference_api import make_token
from tests.servers import api_server, free_port, stop_server

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data" / "prices" / "sp500_sample_2013-05-21_2018-05-18.csv.gz"
TICKERS = ["AAPL", "JNJ", "JPM", "MSFT", "WMT", "XOM"]
# what a model artifact, an out-of-fold table, a Prophet chunk or the offline store would leave
STORED_SUFFIXES = (".parquet", ".bin", ".npz", ".ubj", ".onnx", ".pt", ".tmp")
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _machine(folder: Path, *, shared: dict[str, str]) -> dict[str, str]:
    """The environment of one machine: its own folders, the shared database, Redis and bucket."""
    folder.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ML_", "INVESTML_"))}
    env.update(shared)
    env.update({
        "INVESTML_VAR_DIR": str(folder / "var"), "ML_LOGS_PATH": str(folder / "logs"),
        "ML_REGISTRY_PATH": str(folder / "registry"), "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PYTHONPATH": str(REPO),
    })
    return env


def _run(args: list[str], *, env: dict[str, str], cwd: Path, timeout: float) -> str:
    done = subprocess.run([sys.executable, str(REPO / "manage.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}: {done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def _stored_files(folder: Path) -> list[str]:
    """Files under ``folder`` that only the model or feature storage would write."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and (p.name.endswith(STORED_SUFFIXES) or p.name == "_manifest.json"))


def test_one_machine_trains_the_other_serves_and_predicts_with_nothing_on_local_disk(
        s3_server, s3_bucket, tmp_path):
    started = time.monotonic()
    config = json.loads((REPO / "config" / "pipeline.json").read_text())
    config["models"] = {"xgboost_classifier": {"type": "tree_ensemble", "n_estimators": 10, "max_depth": 3}}
    config_path = tmp_path / "pipeline.json"
    config_path.write_text(json.dumps(config))
    shared = {
        **s3_server.env, "DATABASE_URL": _database_url(),
        "ML_MODELS_PATH": f"s3://{s3_bucket}/ml_models", "ML_FEATURES_PATH": f"s3://{s3_bucket}/features",
        "ML_PIPELINE_CONFIG": str(config_path), "MODEL_PERFORMANCE_THRESHOLD": "0",
        "ML_WALK_FORWARD_FOLDS": "2", "ML_WALK_FORWARD_TEST_DAYS": "40", "ML_WALK_FORWARD_MIN_TRAIN_DAYS": "150",
    }
    a, b = tmp_path / "machine_a", tmp_path / "machine_b"
    env_a, env_b = _machine(a, shared=shared), _machine(b, shared=shared)

    # --- machine A: the daily pipeline (bars from its file drop, features, XGBoost, predictions) ---
    bars = a / "data" / "prices" / "bars.csv"
    bars.parent.mkdir(parents=True)
    env_a.update({"ML_DATA_PATH": str(a / "data"), "ML_MARKET_DATA_PROVIDER": "files"})
    with gzip.open(SAMPLE, "rt") as src, bars.open("w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames)
        writer.writeheader()
        writer.writerows(row for row in reader if row["ticker"] in TICKERS and row["date"] >= "2016-05-18")
    run = json.loads(_run(["run_pipeline", "--sync", "--models", "xgboost_classifier", "--json"], env=env_a, cwd=a,
                          timeout=600).strip().splitlines()[-1])
    assert run["status"] == "succeeded", run
    version = ModelVersion.objects.get(model__name="xgboost_classifier")
    assert version.status == ModelVersion.Status.ACTIVE and version.oof_path
    assert DailyPrediction.objects.filter(model_version=version).count() == len(TICKERS)  # A's own batch
    DailyPrediction.objects.all().delete()  # B writes them again below
    a_done = time.monotonic()

    # --- machine B: /predict by ticker from a served process, then the daily predictions --------
    token = make_token(staff=False)
    port = free_port()
    log = (b / "server.log").open("w")
    server = api_server(cwd=b, env=env_b, port=port, workers=1, log=log)
    served: dict[str, dict] = {}
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/health", timeout=10).status_code < 500:
                    break
            except requests.RequestException:
                time.sleep(0.3)
        with requests.Session() as session:
            session.headers["Authorization"] = f"Token {token}"
            for ticker in TICKERS:
                response = session.post(f"{url}/predict", json={"model_name": "xgboost_classifier", "ticker": ticker},
                                        timeout=120)
                assert response.status_code == 200, (ticker, response.text, (b / "server.log").read_text()[-3000:])
                served[ticker] = response.json()
    finally:
        stop_server(server, log)
    assert set(served) == set(TICKERS)
    for ticker, body in served.items():
        assert body["ticker"] == ticker and body["model_version"] == version.version, body

    _run(["predict_universe", "--json"], env=env_b, cwd=b, timeout=300)
    rows = DailyPrediction.objects.filter(model_version=version)
    assert set(rows.values_list("ticker__symbol", flat=True)) == set(TICKERS) == \
        set(Ticker.objects.values_list("symbol", flat=True))
    assert rows.values("date").distinct().count() == 1

    # --- nothing landed on either machine's disk; everything is in the bucket --------------------
    assert _stored_files(a) == [] and _stored_files(b) == [], (_stored_files(a), _stored_files(b))
    for folder in (a, b):
        assert not (folder / "var" / "ml_models").exists() and not (folder / "var" / "features").exists()
    keys = s3_server.keys(s3_bucket)
    assert f"ml_models/{version.artifact_path}" in keys and f"ml_models/{version.oof_path}" in keys
    assert any(k.startswith("features/") and k.endswith("/_manifest.json") for k in keys)
    assert sum(k.endswith(".parquet") for k in keys) > 10
    print(f"machine A (the pipeline) {a_done - started:.0f}s; machine B (serve {len(served)} "
          f"tickers, predict the universe) {time.monotonic() - a_done:.0f}s; {len(keys)} objects in the bucket")
