"""The pipeline config file is validated at start-up, naming the bad key."""

from __future__ import annotations

import importlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from investml.pipeline_config import (
    PipelineConfig,
    PipelineConfigError,
    load_pipeline_config,
    validate_pipeline_config,
)
from training.learners import LEARNERS

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "pipeline.json"


def test_shipped_config_is_the_spec_config_and_valid():
    config = load_pipeline_config(SHIPPED)
    assert config.orchestrator.max_concurrent_pipelines == 3
    assert config.orchestrator.cost_limit_daily_usd == 10.0
    assert config.training.default_schedule.model_dump() == {"frequency": "daily", "time_of_day": "02:00",
                                                             "day_of_week": 0}
    assert config.training.drift_threshold == 0.3 and config.training.performance_threshold == 0.75
    assert config.models.lstm_predictor.sequence_length == 60
    assert config.models.lstm_predictor.hidden_size == 128
    # tuned for a noisy cross-sectional target (README "Forecast skill"): more, smaller steps, early-stopped
    assert config.models.xgboost_classifier.n_estimators == 600
    assert config.models.xgboost_classifier.learning_rate == 0.05
    assert config.training.horizon_days == 5
    # learners the file does not list still get their defaults
    assert config.models.prophet_forecaster.type == "time_series"
    assert config.model_params("prophet_forecaster")["history_days"] == 750
    # frozen: read once at start-up, changed only by building a new validated object
    with pytest.raises(ValidationError):
        config.training.horizon_days = 10  # type: ignore[misc]
    assert config.with_overrides({"training": {"horizon_days": 10}}).training.horizon_days == 10
    with pytest.raises(PipelineConfigError, match="training.horizon_days"):
        config.with_overrides({"training": {"horizon_days": 0}})


def test_every_learner_parameter_is_in_the_schema():
    """A learner argument the schema does not know could not be configured (or would be rejected)."""
    for name, learner in LEARNERS.items():
        module, cls_name, _ = learner
        params = getattr(importlib.import_module(module), cls_name).PARAMS
        assert set(params) <= set(PipelineConfig().model_params(name)), (name, set(params) - set(
            PipelineConfig().model_params(name)))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["orchestrator"].update(max_concurent_pipelines=3), "orchestrator.max_concurent_pipelines: unknown key"),
        (lambda c: c["orchestrator"].update(max_concurrent_pipelines="3"), "orchestrator.max_concurrent_pipelines: Input should be a valid integer (got str '3')"),
        (lambda c: c["orchestrator"].update(max_concurrent_pipelines=True), "orchestrator.max_concurrent_pipelines: Input should be a valid integer (got a boolean)"),
        (lambda c: c["orchestrator"].update(name="ml_orchestrator"), "orchestrator.name: unknown key"),
        (lambda c: c["training"].update(drift_threshold="high"), "training.drift_threshold: Input should be a valid number"),
        (lambda c: c["training"]["default_schedule"].update(time_of_day="25:00"), "training.default_schedule.time_of_day"),
        (lambda c: c["training"]["default_schedule"].update(day_of_week=7), "training.default_schedule.day_of_week"),
        (lambda c: c["models"]["lstm_predictor"].update(hidden_size=12.5), "models.lstm_predictor.hidden_size: Input should be a valid integer"),
        (lambda c: c["models"].update(random_forest={"type": "tree_ensemble"}), "models.random_forest: unknown key"),
        (lambda c: c.update(extras={}), "extras: unknown key"),
        (lambda c: c["orchestrator"].update(max_concurrent_pipelines=0), "greater than or equal to 1"),
        (lambda c: c["models"]["xgboost_classifier"].update(subsample=7.5), "less than or equal to 1"),
        (lambda c: c["models"]["lstm_predictor"].update(dropout=3.0), "less than or equal to 0.95"),
        (lambda c: c["models"]["lstm_predictor"].update(type="banana"), "models.lstm_predictor.type: Input should be 'neural_network'"),
        (lambda c: c["models"]["xgboost_classifier"].update(objective="poisson"), "models.xgboost_classifier.objective"),
        (lambda c: c["training"].update(feature_set="nope"), "training.feature_set"),
        (lambda c: c.update(providers={"polygon": {"requests_per_day": -1}}), "providers.polygon.requests_per_day"),
    ],
)
def test_invalid_config_names_the_key(mutate, message):
    raw = json.loads(SHIPPED.read_text())
    mutate(raw)
    with pytest.raises(PipelineConfigError) as excinfo:
        validate_pipeline_config(raw)
    assert message in str(excinfo.value)


def test_not_json_and_missing_file(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(PipelineConfigError, match="not valid JSON"):
        load_pipeline_config(bad)
    with pytest.raises(PipelineConfigError, match="not found"):
        load_pipeline_config(tmp_path / "absent.json")


def _manage(args: list[str], **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(("key", "value", "message"), [
    ("max_training_hours", "a day", "training.max_training_hours: Input should be a valid number"),
    ("promotion_metric", "sharpe_ratio", "training.promotion_metric 'sharpe_ratio' is not one of accuracy"),
])
def test_bad_config_stops_startup_naming_the_key(tmp_path, key, value, message):
    raw = json.loads(SHIPPED.read_text())
    raw["training"][key] = value
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(raw))
    result = _manage(["check"], ML_PIPELINE_CONFIG=str(path), INVESTML_VAR_DIR=str(tmp_path / "var"))
    assert result.returncode != 0
    assert message in result.stderr


def test_environment_overrides_and_defaults(tmp_path):
    code = (
        "from django.conf import settings as s; "
        "print(s.ML_API_PORT, s.ML_WORKERS, s.ENABLE_AUTO_RETRAINING, s.MODEL_PERFORMANCE_THRESHOLD, "
        "s.DATA_DRIFT_THRESHOLD, s.ML_DAILY_COST_LIMIT_USD, s.ML_MODELS_PATH, s.DATABASES['default']['ENGINE'], "
        "s.CELERY_BROKER_URL, s.CACHES['default']['BACKEND'])"
    )
    var = tmp_path / "var"
    defaults = _manage(["shell", "-v", "0", "-c", code], INVESTML_VAR_DIR=str(var))
    assert defaults.returncode == 0, defaults.stderr
    port, workers, auto, perf, drift, cost, models, engine, broker, cache = defaults.stdout.split("\n")[-2].split()
    assert (port, workers, auto, perf, drift, cost) == ("8001", "4", "True", "0.75", "0.3", "10.0")
    assert models == str(var / "ml_models")
    assert engine == "django.db.backends.sqlite3" and broker == "filesystem://"
    assert cache == "investml.cache_serializers.PersistentDiskCache"

    custom = _manage(
        ["shell", "-c", code],
        INVESTML_VAR_DIR=str(var), ML_API_PORT="9001", ML_WORKERS="2", ENABLE_AUTO_RETRAINING="false",
        MODEL_PERFORMANCE_THRESHOLD="0.6", DATA_DRIFT_THRESHOLD="0.25", ML_DAILY_COST_LIMIT_USD="12.5",
        ML_MODELS_PATH=str(tmp_path / "models"), DATABASE_URL="postgres://u:p@db.invalid:5432/x",
        REDIS_URL="redis://cache.invalid:6379/0",
    )
    assert custom.returncode == 0, custom.stderr
    port, workers, auto, perf, drift, cost, models, engine, broker, cache = custom.stdout.split("\n")[-2].split()
    assert (port, workers, auto, perf, drift, cost) == ("9001", "2", "False", "0.6", "0.25", "12.5")
    assert models == str(tmp_path / "models")
    assert engine == "django.db.backends.postgresql"
    assert broker == "redis://cache.invalid:6379/0" and cache.endswith("RedisCache")



def test_environment_values_are_parsed_once_into_typed_settings(tmp_path):
    code = (
        "from django.conf import settings as s; "
        "print(repr((s.ML_WALK_FORWARD_FOLDS, s.ML_WALK_FORWARD_GAP_DAYS, s.ML_INTRADAY_ENABLED, s.ALERT_EMAILS, "
        "s.ML_LSTM_QUANTIZE_TOLERANCE, s.ML_INTRADAY_POLL_TICKERS, s.ML_PROMOTION_SCORE, s.ML_PREDICTION_CACHE_SHARED)))"
    )
    # an empty value (what docker-compose passes for an unset variable) is the default
    result = _manage(
        ["shell", "-v", "0", "-c", code], INVESTML_VAR_DIR=str(tmp_path / "var"),
        ML_WALK_FORWARD_FOLDS="", ML_WALK_FORWARD_GAP_DAYS=" 7 ", ML_INTRADAY_ENABLED="",
        ALERT_EMAILS="ops@example.com, ml@example.com,", ML_LSTM_QUANTIZE_TOLERANCE="1e-4",
        ML_INTRADAY_POLL_TICKERS="aapl, jpm", ML_PROMOTION_SCORE=" Value ", ML_PREDICTION_CACHE_SHARED="on",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == repr(
        (3, 7, True, ["ops@example.com", "ml@example.com"], 1e-4, ["AAPL", "JPM"], "value", True))


@pytest.mark.parametrize(("name", "value", "message"), [
    ("ML_WALK_FORWARD_FOLDS", "0", "ML_WALK_FORWARD_FOLDS must be at least 1 (got 0)"),
    ("ML_PIPELINE_POLL_SECONDS", "soon", "ML_PIPELINE_POLL_SECONDS must be a number (got 'soon')"),
    ("ML_TRAINING_MAX_ATTEMPTS", "2.5", "ML_TRAINING_MAX_ATTEMPTS must be an integer (got '2.5')"),
    ("ML_RECOMMENDATION_BUY_FRACTION", "1.5", "ML_RECOMMENDATION_BUY_FRACTION must be between 0 and 1 (got 1.5)"),
    ("ML_PROMOTION_SCORE", "sharpe", "ML_PROMOTION_SCORE must be one of confidence, value (got 'sharpe')"),
    ("MONITORING_PERFORMANCE_METRIC", "sharpe", "MONITORING_PERFORMANCE_METRIC must be one of accuracy, "),
])
def test_a_bad_environment_value_stops_startup_naming_it(tmp_path, name, value, message):
    result = _manage(["check"], INVESTML_VAR_DIR=str(tmp_path / "var"), **{name: value})
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-500:]

def test_without_a_key_outside_production_each_installation_makes_and_keeps_its_own(tmp_path):
    show = ["shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY)"]
    first = _manage(show, INVESTML_VAR_DIR=str(tmp_path / "one"), DJANGO_SECRET_KEY="")
    again = _manage(show, INVESTML_VAR_DIR=str(tmp_path / "one"), DJANGO_SECRET_KEY="")
    other = _manage(show, INVESTML_VAR_DIR=str(tmp_path / "two"), DJANGO_SECRET_KEY="")
    assert first.returncode == again.returncode == other.returncode == 0, first.stderr[-500:]
    key, key_again, other_key = (result.stdout.strip().splitlines()[-1] for result in (first, again, other))
    assert key == key_again != other_key  # kept, and not shared between installations
    assert len(key) >= 50 and "insecure" not in key
    stored = tmp_path / "one" / "secret-key"
    assert stored.read_text() == key and stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert [p.name for p in stored.parent.iterdir() if p.name.startswith(".secret-key")] == []  # no draft left


def test_production_requires_secret_key_and_passes_deploy_check(tmp_path):
    var = str(tmp_path / "var")
    missing = _manage(["check"], DJANGO_PRODUCTION="true", INVESTML_VAR_DIR=var)
    assert missing.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in missing.stderr
    # what docker-compose passes when the variable is unset, a published default, a short key
    for key, message in (("", "is not set"), ("change-me-in-production", "published default"),
                         ("insecure-dev-key-only-for-local-use-" + "x" * 20, "published default"),
                         ("s3cr3t-but-short", "too weak"), ("a" * 60, "too weak")):
        refused = _manage(["check"], DJANGO_PRODUCTION="true", INVESTML_VAR_DIR=var, DJANGO_SECRET_KEY=key)
        assert refused.returncode != 0 and message in refused.stderr, (key, refused.stderr[-300:])
    deploy = _manage(
        ["check", "--deploy", "--fail-level", "WARNING"],
        DJANGO_PRODUCTION="true", INVESTML_VAR_DIR=var,
        DJANGO_SECRET_KEY="k8Vt0zQ-2pLr9xYwE4nB7mJc5sHa1dUf6gTi3oKe_RqZvXyNbM",
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
