"""``retrain`` end to end on a tiny real subset (8 S&P 500 tickers, 2 years of the bundled sample, built
into a feature store under tmp_path):
all four learners registered, stages and cost recorded, the leakage guard in every fold, the
``evaluate --json`` contract, the Celery path (eager) and the run status command."""

from __future__ import annotations

import csv
import gzip
import io
import json
import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from features.feature_sets import FEATURE_COLUMNS
from features.services.feature_store import build_features
from monitoring.models import CostRecord
from registry.metrics import METRIC_KEYS
from registry.models import ModelVersion
from registry.selectors import load_oof, load_version
from training import dispatch, prophet_chunks, runs, services, tasks
from training.config import RetrainError
from training.models import TrainingRun
from training.processes import worker_host, worker_id

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data" / "prices" / "sp500_sample_2013-05-21_2018-05-18.csv.gz"
TICKERS = ["AAPL", "AMZN", "GOOGL", "JNJ", "JPM", "MSFT", "WMT", "XOM"]
FIRST_DAY = "2016-05-18"
TINY_MODELS = {
    "lstm_predictor": {"type": "neural_network", "features": 20, "sequence_length": 10, "hidden_size": 8,
                       "epochs": 1, "batch_size": 256, "seed": 42, "enabled": True},
    "xgboost_classifier": {"type": "tree_ensemble", "n_estimators": 10, "max_depth": 3, "learning_rate": 0.1,
                           "seed": 42, "enabled": True},
    "prophet_forecaster": {"type": "time_series", "history_days": 250, "uncertainty_samples": 30, "seed": 42,
                           "enabled": True},
    "ensemble": {"type": "ensemble", "seed": 42, "enabled": True, "members": None},
}


@pytest.fixture
def tiny_setup(settings, tmp_path):
    """8 real tickers x 2 years ingested and built into a feature store under tmp_path."""
    settings.ML_FEATURES_PATH = tmp_path / "features"
    settings.ML_MODELS_PATH = tmp_path / "ml_models"
    caches = {name: dict(conf) for name, conf in settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = f"test-training-{uuid.uuid4().hex[:10]}"
    settings.CACHES = caches
    path = tmp_path / "bars.csv"
    with gzip.open(SAMPLE, "rt") as src, path.open("w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames)
        writer.writeheader()
        for row in reader:
            if row["ticker"] in TICKERS and row["date"] >= FIRST_DAY:
                writer.writerow(row)
    call_command("ingest_prices", str(path), stdout=io.StringIO(), stderr=io.StringIO())
    settings.PIPELINE_CONFIG = settings.PIPELINE_CONFIG.with_overrides(
        {"models": TINY_MODELS, "training": {"horizon_days": 5}})
    settings.ML_WALK_FORWARD_FOLDS, settings.ML_WALK_FORWARD_TEST_DAYS = 2, 40
    settings.ML_WALK_FORWARD_MIN_TRAIN_DAYS, settings.ML_WALK_FORWARD_GAP_DAYS = 150, None
    settings.ML_LSTM_MAX_TRAIN_ROWS, settings.ML_PROPHET_CHUNK_TICKERS = 1500, 3
    settings.ML_COMPUTE_USD_PER_CPU_HOUR = 0.10
    return tmp_path


@pytest.fixture
def built(tiny_setup):
    build_features(tickers=TICKERS)
    return tiny_setup


def retrain_eagerly(run_id: int):
    """The worker's side of a queued training run, in this process (chords included); its result."""
    from investml.celery import app

    saved = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, True
    try:
        return tasks.retrain_task.apply(args=[run_id])
    finally:
        app.conf.task_always_eager, app.conf.task_eager_propagates = saved


def _stage_names(run):
    return [s["name"] for s in run.stages]


def test_retrain_sync_registers_all_four_learners(built, tmp_path):
    out = io.StringIO()
    call_command("retrain", "--sync", "--tickers", ",".join(TICKERS), stdout=out)
    run = TrainingRun.objects.get()
    assert run.status == "succeeded", run.error + run.log
    assert run.trigger == "command" and run.tickers == sorted(TICKERS)
    names = _stage_names(run)
    assert names[:2] == ["load_frame", "prepare"]
    for learner in ("xgboost_classifier", "lstm_predictor", "ensemble"):
        for step in ("evaluate", "fit", "register", "gate"):
            assert f"{step}:{learner}" in names
    assert [n for n in names if n.startswith("chunk:prophet")] == [f"chunk:prophet_forecaster[{i}]" for i in range(3)]
    assert {"combine:prophet_forecaster", "register:prophet_forecaster", "gate:prophet_forecaster"} <= set(names)
    assert names[-1] == "finish" and all(s["status"] == "succeeded" for s in run.stages)
    assert all(s["seconds"] >= 0 and "cpu_seconds" in s for s in run.stages)
    load = run.stages[0]["counts"]
    assert load["tickers"] == 8 and load["rows"] > 3000 and load["features"] == len(FEATURE_COLUMNS)

    versions = {v.model.name: v for v in ModelVersion.objects.select_related("model")}
    assert set(versions) == {"lstm_predictor", "xgboost_classifier", "prophet_forecaster", "ensemble"}
    for version in versions.values():
        assert version.version == "1.0.0" and version.training_run == run
        assert version.status in ("active", "staging") and version.status_reason
        assert set(version.metrics) == set(METRIC_KEYS)
        assert set(version.baselines) == {"zero", "momentum_20", "reversal_5"}
        assert version.artifact_sha256 and version.oof_sha256 and version.training_data_hash
        assert version.drift_reference["features"] and version.gate["metric"] == "rank_ic"
        assert version.train_end is not None and version.evaluation_end >= version.evaluation_start
        assert version.cost_usd > 0 and version.training_seconds > 0
        assert load_version(version=version) is not None
        # leakage guard: every fold keeps at least the horizon between its training and test dates
        folds = version.evaluation["folds"]
        assert folds and all(f["gap_days"] >= 5 and f["dates_between_train_and_test"] >= 5 for f in folds)
        assert all(pd.Timestamp(f["train_end"]) < pd.Timestamp(f["test_start"]) for f in folds)
    assert versions["xgboost_classifier"].target == "fwd_csup_5" and versions["lstm_predictor"].target == "fwd_csrank_5"
    assert len(versions["lstm_predictor"].feature_columns) == 20
    assert versions["lstm_predictor"].evaluation["final_fit"]["sampled_rows"] == 1500
    assert versions["prophet_forecaster"].drift_reference["features"].keys() == {"log_return_1"}
    members = versions["ensemble"].members.all()
    assert {m.model.name for m in members} == {"lstm_predictor", "xgboost_classifier", "prophet_forecaster"}
    assert all(m.training_run == run for m in members)
    # the ensemble learned from members' out-of-fold predictions: its rows are a subset of theirs
    ens = load_oof(version=versions["ensemble"])
    xgb = load_oof(version=versions["xgboost_classifier"])
    assert ens["date"].min() > xgb["date"].min() and set(ens["date"]) <= set(xgb["date"])

    # cost: measured CPU seconds at the configured rate, and a compute cost record
    assert run.cpu_seconds > 0
    assert float(run.cost_usd) == pytest.approx(run.cpu_seconds / 3600 * 0.10, abs=2e-6)
    record = CostRecord.objects.get(category="compute")
    assert record.unit == "cpu_second" and record.units == pytest.approx(run.cpu_seconds, abs=1e-3)
    assert "training run" in record.detail
    assert "finish" in out.getvalue() and "xgboost_classifier@1.0.0" in out.getvalue()

    # evaluate --json: the last line is the walk-forward out-of-sample summary
    out = io.StringIO()
    call_command("evaluate", "--model", "xgboost_classifier", "--json", stdout=out)
    payload = json.loads(out.getvalue().strip().splitlines()[-1])
    assert set(payload) >= {"model", "version", "metrics", "baselines", "folds"}
    assert payload["model"] == "xgboost_classifier" and payload["version"] == "1.0.0"
    assert list(payload["metrics"]) == list(METRIC_KEYS)
    assert set(payload["baselines"]) == {"zero", "momentum_20", "reversal_5"}
    assert all(set(b) == set(METRIC_KEYS) for b in payload["baselines"].values())
    assert len(payload["folds"]) == 2 and {"train_start", "test_end", "gap_days", "metrics"} <= set(payload["folds"][0])

    # status: recent runs with stages, durations, outcomes
    out = io.StringIO()
    call_command("retrain", "--status", stdout=out)
    text = out.getvalue()
    assert f"training run {run.pk}: succeeded" in text and "evaluate:lstm_predictor" in text and "->" in text

    # the report from the registry's stored out-of-sample predictions
    out = io.StringIO()
    call_command("evaluation_report", "--registry", "--markdown", stdout=out)
    table = out.getvalue()
    assert ("| model | IC | ICIR | Rank IC | Rank ICIR | Rank IC t | Ann. return (net, 10 bps) | IR | Turnover "
            "| Max DD |") in table
    assert "Rank IC by year" in table
    assert "baseline: momentum_20" in table and "ensemble@1.0.0" in table
    # ... and from fresh walk-forward models on a window (nothing registered)
    out = io.StringIO()
    call_command("evaluation_report", "--symbols", ",".join(TICKERS), "--start", "2016-05-18", "--json",
                 stdout=out, stderr=io.StringIO())
    report = json.loads(out.getvalue().strip().splitlines()[-1])
    assert set(report["models"]) == {"xgboost_classifier", "lstm_predictor", "prophet_forecaster", "ensemble"}
    assert report["tickers"] == 8 and set(report["baselines"]) == {"zero", "momentum_20", "reversal_5"}
    assert set(report["protocol"]["models"]) == set(report["models"]) and report["cost_bps"] == 10.0
    assert ModelVersion.objects.count() == 4
    # members' predictions saved, then reused: the same table without training them again
    saved = tmp_path / "oof"
    args = ["--symbols", ",".join(TICKERS), "--start", "2016-05-18", "--models", "xgboost_classifier,prophet_forecaster,ensemble",
            "--json"]
    out = io.StringIO()
    call_command("evaluation_report", *args, "--save-predictions", str(saved), stdout=out, stderr=io.StringIO())
    first = json.loads(out.getvalue().strip().splitlines()[-1])
    assert sorted(p.name for p in saved.iterdir()) == ["ensemble.parquet", "prophet_forecaster.parquet",
                                                      "xgboost_classifier.parquet"]
    out, err = io.StringIO(), io.StringIO()
    call_command("evaluation_report", *args, "--reuse-predictions", str(saved), stdout=out, stderr=err)
    again = json.loads(out.getvalue().strip().splitlines()[-1])
    assert "xgboost_classifier: " in err.getvalue() and "predictions reused" in err.getvalue()
    for name in ("xgboost_classifier", "prophet_forecaster", "ensemble"):
        for key, value in first["models"][name].items():
            assert again["models"][name][key] == pytest.approx(value, nan_ok=True), (name, key)
    with pytest.raises(CommandError, match="horizon 5, this report's is 1"):
        call_command("evaluation_report", *args, "--horizon", "1", "--reuse-predictions", str(saved),
                     stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(CommandError, match="cover .* dates, this report's folds test"):
        call_command("evaluation_report", *args, "--folds", "1", "--reuse-predictions", str(saved),
                     stdout=io.StringIO(), stderr=io.StringIO())

    # a re-run on the same data is a patch and does not beat itself
    services.retrain(models=["xgboost_classifier"], tickers=TICKERS, sync=True, requested_by="test")
    again = ModelVersion.objects.get(model__name="xgboost_classifier", version="1.0.1")
    assert again.training_data_hash == versions["xgboost_classifier"].training_data_hash
    np.testing.assert_allclose(load_oof(version=again)["expected_return"], xgb["expected_return"])
    if versions["xgboost_classifier"].status == "active":
        assert again.status == "staging" and "does not beat" in again.status_reason


def test_retrain_queues_on_celery_and_the_chord_path_runs(built, monkeypatch, settings):
    settings.ML_WALK_FORWARD_MAX_TICKERS = 5  # the walk-forward evaluates a sample; the final fits use all 8
    queued = []
    monkeypatch.setattr(dispatch, "retrain_send", lambda *, run_id: queued.append(run_id) or "task-123")
    out = io.StringIO()
    call_command("retrain", "--models", "xgboost_classifier,prophet_forecaster", stdout=out)
    run = TrainingRun.objects.get()
    assert queued == [run.pk] and run.status == "queued" and run.celery_task_id == "task-123"
    assert run.options["walk_forward"] == {"n_folds": 2, "test_days": 40, "min_train_days": 150, "gap_days": 5,
                                           "max_tickers": 5}
    assert "queued training run" in out.getvalue()

    # a broker that is down fails the run at once instead of leaving it queued
    def down(*, run_id):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(dispatch, "retrain_send", down)
    with pytest.raises(RetrainError, match="could not queue training run .* --sync"):
        services.retrain(models=["xgboost_classifier"], sync=False)
    lost = TrainingRun.objects.order_by("-id").first()
    assert lost.status == "failed" and "ConnectionError: broker unreachable" in lost.error

    # the worker side, eagerly: Prophet chunks as a chord, merged, registered, run closed
    result = retrain_eagerly(run.pk)
    assert result.successful(), result.traceback
    run.refresh_from_db()
    assert run.status == "succeeded", run.error + run.log
    names = _stage_names(run)
    assert "dispatch:prophet_forecaster" in names and "combine:prophet_forecaster" in names
    assert sum(n.startswith("chunk:prophet_forecaster[") for n in names) == 3
    assert run.parts_pending == [] and names[-1] == "finish"
    assert set(ModelVersion.objects.values_list("model__name", flat=True)) == {"xgboost_classifier",
                                                                               "prophet_forecaster"}
    sample = set(run.options["evaluation_tickers"])
    assert len(sample) == 5 and sample < set(TICKERS) and run.stages[1]["counts"]["evaluation_tickers"] == 5
    for version in ModelVersion.objects.all():
        assert set(load_oof(version=version)["ticker"]) == sample  # chunks evaluated only their sampled tickers
        assert version.evaluation["evaluated_tickers"] == 5 and version.tickers == 8
    prophet = load_version(version=ModelVersion.objects.get(model__name="prophet_forecaster"))
    assert set(prophet.tickers) == set(TICKERS)  # the final fit covers every ticker
    assert not (built / "ml_models" / "_runs" / str(run.pk)).exists()  # scratch files removed


def test_a_run_stopped_meanwhile_registers_nothing_late(built, monkeypatch):
    """The orchestrator stops a run (cancelled, over max_training_hours) while its Prophet chunks run:
    the chunks not started are not fitted and the merge registers nothing."""
    from training.orchestrator.training_runs import stop_training

    monkeypatch.setattr(dispatch, "retrain_send", lambda *, run_id: "task-9")
    run = services.retrain(models=["prophet_forecaster"], sync=False)
    real_fit, fitted = prophet_chunks.fit_prophet_chunk, []

    def fit_then_stop(**kwargs):
        fitted.append(1)
        stop_training(training_run_id=run.pk, why="pipeline run 1 was cancelled by test")
        return real_fit(**kwargs)

    monkeypatch.setattr(services, "fit_prophet_chunk", fit_then_stop)  # where the chunk task looks it up
    assert retrain_eagerly(run.pk).successful()
    run.refresh_from_db()
    assert fitted == [1]  # the other two chunks saw the stop and skipped their fit
    assert run.status == "failed" and "cancelled by test" in run.error
    assert "prophet_forecaster not registered: the run was failed meanwhile" in run.log
    assert not ModelVersion.objects.filter(model__name="prophet_forecaster").exists()
    assert not (built / "ml_models" / "_runs" / str(run.pk)).exists()


def test_a_worker_shutting_down_mid_learner_leaves_the_run_to_be_restarted(built, monkeypatch):
    """Ctrl-C or a deploy stops the worker: Celery's pool raises SystemExit in the training task. The
    run is not closed as failed for the interrupted learner: it stays running with its main part
    pending, and the next delivery restarts it and trains every learner."""
    real_train, calls = services.train_learner, []

    def stopped_at_the_second(ctx, name):
        calls.append(name)
        if len(calls) == 2:
            raise SystemExit(-15)
        return real_train(ctx, name)

    monkeypatch.setattr(services, "train_learner", stopped_at_the_second)
    monkeypatch.setattr(dispatch, "retrain_send", lambda *, run_id: "task-1")
    run = services.retrain(models=["xgboost_classifier", "lstm_predictor", "ensemble"], sync=False)
    with pytest.raises(SystemExit):
        services.execute_run(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == "running" and run.parts_pending == ["main"] and run.finished_at is None
    assert not ModelVersion.objects.filter(model__name="ensemble").exists()  # not finalized
    assert "finish" not in [stage["name"] for stage in run.stages]

    monkeypatch.setattr(services, "train_learner", real_train)
    TrainingRun.objects.filter(pk=run.pk).update(options={**run.options, "worker": f"{worker_host()}:999999999"})
    run = services.execute_run(run_id=run.pk)  # the redelivery: its owner is gone
    assert run.status == "succeeded" and run.options["attempt"] == 2, run.error
    assert set(ModelVersion.objects.values_list("model__name", flat=True)) == {
        "xgboost_classifier", "lstm_predictor", "ensemble"}


def test_failures_are_recorded_in_the_troubleshooting_tone(tiny_setup):
    # nothing built into the feature store yet
    run = services.retrain(models=["xgboost_classifier"], tickers=["AAPL"], sync=True)
    assert run.status == "failed" and run.finished_at is not None
    assert run.error.startswith(f"ERROR: Pipeline training_run_{run.pk} failed at preparation: NoTrainingData")
    assert "no successful build" in run.error and "Solutions:" in run.error and "build_features" in run.error
    assert run.stages[0]["name"] == "load_frame" and run.stages[0]["status"] == "failed"
    with pytest.raises(RetrainError, match="unknown model"):
        services.retrain(models=["gpt"], sync=True)


def test_a_run_whose_worker_keeps_dying_stops_after_the_attempt_limit(tiny_setup, settings):
    """acks_late redelivers a training task whose worker died (the OOM killer): each delivery finds
    the run RUNNING and restarts it, until ML_TRAINING_MAX_ATTEMPTS; then it fails as out of memory."""
    settings.ML_TRAINING_MAX_ATTEMPTS = 2
    run = TrainingRun.objects.create(status="running", model_names=["xgboost_classifier"], tickers=["AAPL"],
                                     options={"horizon": 5, "walk_forward": {"n_folds": 2, "test_days": 40,
                                              "min_train_days": 150, "gap_days": 5}, "attempt": 1})
    again = services.execute_run(run_id=run.pk)  # attempt 2 of 2: runs (and fails on the empty store)
    assert again.options["attempt"] == 2 and "attempt 2 of 2" in again.log and "NoTrainingData" in again.error
    TrainingRun.objects.filter(pk=run.pk).update(status="running")  # its worker died once more
    last = services.execute_run(run_id=run.pk)
    assert last.status == "failed" and last.finished_at is not None and last.options["attempt"] == 2
    assert "MemoryError: Out of memory" in last.error and "the worker was lost 2 times" in last.error
    assert "Check available memory: free -h" in last.error and "ML_LSTM_MAX_TRAIN_ROWS" in last.error


def test_a_training_task_delivered_twice_leaves_the_running_copy_alone(tiny_setup):
    """A broker delivers at least once: a copy of the task that finds the run training in a live
    process of this machine stops; once that process is gone, a delivery restarts the run."""
    options = {"horizon": 5, "walk_forward": {"n_folds": 2, "test_days": 40, "min_train_days": 150, "gap_days": 5}}
    owner = subprocess.Popen(["sleep", "120"])
    try:
        run = TrainingRun.objects.create(status="running", model_names=["xgboost_classifier"], tickers=["AAPL"],
                                         options={**options, "attempt": 1, "worker": f"{worker_host()}:{owner.pid}"},
                                         log="training\n")
        copy = services.execute_run(run_id=run.pk)
        assert (copy.status, copy.options["attempt"], copy.log) == ("running", 1, "training\n")
    finally:
        owner.kill()
        owner.wait()
    again = services.execute_run(run_id=run.pk)
    assert again.options["attempt"] == 2 and again.options["worker"] == worker_id()
    assert "restarting (the previous attempt was interrupted)" in again.log


def test_a_copy_on_another_machine_goes_by_the_heartbeat_and_a_finished_main_part_stays_done(tiny_setup, settings):
    """A process of another machine cannot be asked: a copy of the task leaves the run to it while
    its heartbeat is fresh (ML_PIPELINE_HEARTBEAT_TIMEOUT_SECONDS), and restarts it once stale. A run
    whose main part is done (only Prophet's chunks pending) is never restarted by a copy."""
    timeout = settings.ML_PIPELINE_HEARTBEAT_TIMEOUT_SECONDS
    elsewhere = "another-machine.example:4242"
    options = {"horizon": 5, "walk_forward": {"n_folds": 2, "test_days": 40, "min_train_days": 150, "gap_days": 5},
               "attempt": 1, "worker": elsewhere}
    now = timezone.now()
    run = TrainingRun.objects.create(status="running", model_names=["xgboost_classifier"], tickers=["AAPL"],
                                     options=options, log="training\n", parts_pending=["main"],
                                     heartbeat_at=now - timedelta(seconds=timeout - 30))
    copy = services.execute_run(run_id=run.pk)
    assert (copy.status, copy.options["attempt"], copy.options["worker"], copy.log) == ("running", 1, elsewhere,
                                                                                         "training\n")

    TrainingRun.objects.filter(pk=run.pk).update(parts_pending=["prophet"], heartbeat_at=None)
    copy = services.execute_run(run_id=run.pk)
    assert (copy.options["attempt"], copy.parts_pending, copy.log) == (1, ["prophet"], "training\n")

    TrainingRun.objects.filter(pk=run.pk).update(parts_pending=["main"], heartbeat_at=now - timedelta(seconds=timeout + 30))
    again = services.execute_run(run_id=run.pk)
    assert again.options["attempt"] == 2 and again.options["worker"] == worker_id()
    assert "restarting (the previous attempt was interrupted)" in again.log
    assert again.heartbeat_at is not None and again.heartbeat_at >= now  # stamped when this attempt began


@pytest.mark.django_db(transaction=True)
def test_the_process_training_a_run_keeps_its_heartbeat_fresh(settings):
    """``training_heartbeat`` stamps the run from a thread while the block runs, only while the run is
    still this process's (a run restarted by another process is left to that one), and stops after."""
    settings.ML_PIPELINE_HEARTBEAT_SECONDS = 0.05
    mine = TrainingRun.objects.create(status="running", options={"worker": worker_id()})
    theirs = TrainingRun.objects.create(status="running", options={"worker": "another-machine.example:1"})

    def stamp(run: TrainingRun):
        return TrainingRun.objects.get(pk=run.pk).heartbeat_at

    with runs.training_heartbeat(mine.pk), runs.training_heartbeat(theirs.pk):
        deadline = time.monotonic() + 30
        while stamp(mine) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        first = stamp(mine)
        assert first is not None
        while stamp(mine) == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stamp(mine) > first  # beats again, not once
    last = stamp(mine)
    time.sleep(0.3)
    assert stamp(mine) == last  # the thread is gone with the block
    assert stamp(theirs) is None  # never stamped: it is another process's run


def test_a_per_date_normalized_feature_set_is_trained_and_served_the_same_way(tiny_setup, settings):
    """``training.feature_set: default_cs``: the store keeps raw values, every reader gets them
    normalized per date over the whole universe, and /predict by ticker scores what training saw."""
    from rest_framework.test import APIClient

    from features.normalize import CLIP
    from features.selectors import training_frame
    from inference.model_manager import get_manager
    from tests.integration.test_inference_api import _reset, make_token

    settings.PIPELINE_CONFIG = settings.PIPELINE_CONFIG.with_overrides({"training": {"feature_set": "default_cs"}})
    _reset()
    build_features(tickers=TICKERS)
    frame = training_frame()
    cols = [c for c in FEATURE_COLUMNS if c in frame.columns]
    values = frame[cols].to_numpy(np.float64)
    assert np.nanmax(np.abs(values)) <= CLIP
    medians = frame.groupby("date")["vol_20"].median().dropna()
    assert len(medians) > 100 and medians.abs().max() < 1e-5  # centred on each day's median (float32)
    assert frame["day_of_week"].abs().max() == 0  # the same for every stock of a day

    run = services.retrain(models=["xgboost_classifier"], tickers=TICKERS, sync=True, requested_by="test")
    version = ModelVersion.objects.get(training_run=run, model__name="xgboost_classifier")
    assert version.feature_set_version.feature_set.name == "default_cs"
    assert version.feature_set_version.params["cs_normalization"] == "robust_zscore"
    try:
        version.status = "active"
        version.save(update_fields=["status"])
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {make_token(staff=False)}")
        body = client.post("/predict", {"ticker": "MSFT", "model_name": "xgboost_classifier"}, format="json").json()
        rows = frame[frame["ticker"] == "MSFT"]
        learner = get_manager().get("xgboost_classifier").learner
        assert body["feature_date"] == rows["date"].iloc[-1].date().isoformat()
        assert body["expected_return"] == pytest.approx(float(learner.predict(rows.iloc[-1:]).expected_return[0]),
                                                        rel=1e-5)
    finally:
        _reset()  # no buffered prediction-log rows outlive the test database
