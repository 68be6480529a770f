"""The ML API end to end on a small real registry (4 sample tickers, the four learners trained tiny,
registered and promoted; see ``tests.served_registry``): the spec's endpoints and fields, auth rules,
bad input (400/404/413 naming the field), a tampered artifact (degraded, 503), version swaps on
promotion, the prediction cache, the prediction log, and a hypothesis property on /predict."""

from __future__ import annotations

import gc
import json
import math
import threading
import time
import uuid
import weakref

import numpy as np
import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from inference import authentication, prediction_log, services, throttling
from inference import cache as prediction_cache
from inference.inputs import clear_caches
from inference.model_manager import get_manager, heap_freeze
from inference.models import PredictionLog
from investml.permissions import OPERATOR_PERMISSIONS
from tests.served_registry import build_served_registry, register, trained_artifacts

pytestmark = [pytest.mark.django_db]

SPEC_PREDICT_FIELDS = {"prediction", "model_name", "timestamp", "confidence", "model_version", "horizon_days",
                       "expected_return", "direction"}


def _reset() -> None:
    get_manager().reset()
    prediction_log.discard()
    prediction_cache.reset_counters()
    prediction_cache.clear_local()
    clear_caches()
    throttling.reset_leases()
    authentication.forget_all()


def served_registry(settings, tmp_path):
    """The registry, with its own cache namespace, models folder and feature store (the body of the
    ``served`` fixture; the other inference test modules declare theirs with it)."""
    settings.ML_FEATURES_PATH = tmp_path / "features"
    settings.ML_MODELS_PATH = tmp_path / "ml_models"
    caches = {name: dict(conf) for name, conf in settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = f"test-inference-{uuid.uuid4().hex[:10]}"
    settings.CACHES = caches
    settings.ML_ACTIVE_VERSION_CHECK_SECONDS = 0  # see promotions at once
    _reset()
    registry = build_served_registry(workdir=tmp_path / "work")
    yield registry
    _reset()  # never leave buffered log rows for another test (or the atexit flush)


@pytest.fixture
def served(settings, tmp_path):
    yield from served_registry(settings, tmp_path)


def make_token(*, staff: bool) -> str:
    """A token of a plain user, or of staff holding the operator permissions (investml.permissions)."""
    user = get_user_model().objects.create_user(f"{'staff' if staff else 'user'}-{uuid.uuid4().hex[:6]}",
                                                is_staff=staff)
    if staff:
        for perm in OPERATOR_PERMISSIONS:
            app_label, codename = perm.split(".")
            user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return Token.objects.create(user=user).key


def make_client(*, staff: bool) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {make_token(staff=staff)}")
    return client


@pytest.fixture
def client(served):
    return make_client(staff=False)


@pytest.fixture
def staff(served):
    return make_client(staff=True)


def _frame_last(registry, ticker):
    frame = registry.frame
    return frame.loc[frame["ticker"] == ticker].reset_index(drop=True)


def _vector(registry, model, ticker="AAPL"):
    columns = registry.versions[model].feature_columns
    return [float(v) for v in _frame_last(registry, ticker)[columns].iloc[-1].fillna(0.0)]


def _error_names(response, field):
    body = response.json()
    return field in body.get("detail", "") or field in body.get("errors", {})


# --------------------------------------------------------------------------------------------------
# the spec's endpoints


def test_health_is_public_and_reports_the_loaded_models(served, staff):
    response = APIClient().get("/health")
    assert response.status_code == 200 and response.json() == {"status": "healthy"}  # anonymous: status only
    response = staff.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy" and body["reasons"] == []
    assert body["models_loaded"] == 4
    assert sorted(body["models"]) == ["ensemble", "lstm_predictor", "prophet_forecaster", "xgboost_classifier"]
    assert body["timestamp"].endswith("Z") and body["database"] == "ok"
    assert body["active_versions"]["lstm_predictor"] == "1.0.0"
    assert set(body["cache"]) >= {"hits", "misses", "hit_ratio"}


def test_models_lists_the_spec_fields(client, served):
    response = client.get("/models")
    assert response.status_code == 200
    models = {m["name"]: m for m in response.json()}
    assert set(models) == {"ensemble", "lstm_predictor", "prophet_forecaster", "xgboost_classifier"}
    for info in models.values():
        assert {"name", "type", "features", "score", "loaded_at", "version", "status"} <= set(info)
        assert info["version"] == "1.0.0" and info["status"] == "loaded" and info["loaded_at"]
    assert models["lstm_predictor"]["type"] == "neural_network" and models["lstm_predictor"]["features"] == 20
    assert models["xgboost_classifier"]["features"] == len(served.feature_columns)


def test_predict_with_the_spec_request(client, served):
    features = _vector(served, "lstm_predictor")
    response = client.post("/predict", {"features": features, "model_name": "lstm_predictor"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert SPEC_PREDICT_FIELDS <= set(body)
    assert body["model_name"] == "lstm_predictor" and body["model_version"] == "1.0.0" and body["horizon_days"] == 5
    assert body["prediction_type"] == "return" and body["prediction"] == body["expected_return"]
    assert 0 <= body["confidence"] <= 1 and body["direction"] == ("up" if body["expected_return"] > 0 else "down")
    # a reference price turns the prediction into a price
    priced = client.post("/predict", {"features": features, "model_name": "lstm_predictor",
                                      "reference_price": 150.0}, format="json").json()
    assert priced["prediction_type"] == "price"
    assert math.isclose(priced["prediction"], 150.0 * (1 + priced["expected_return"]))
    # the served model gives what the learner gives for a one-day history
    learner = get_manager().get("lstm_predictor").learner
    import pandas as pd

    one = pd.DataFrame([features], columns=learner.feature_columns).assign(ticker="X", date=pd.Timestamp("2018-01-02"))
    assert math.isclose(body["expected_return"], float(learner.predict(one).expected_return[0]), rel_tol=1e-6)


@pytest.mark.parametrize("model", ["xgboost_classifier", "lstm_predictor", "prophet_forecaster", "ensemble"])
def test_predict_by_ticker_matches_the_learner_on_the_stored_history(client, served, model):
    response = client.post("/predict", {"ticker": "aapl", "model_name": model}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    rows = _frame_last(served, "AAPL")
    last = rows.iloc[-1]
    assert body["ticker"] == "AAPL" and body["feature_date"] == last["date"].date().isoformat()
    assert body["prediction_type"] == "price" and math.isclose(body["reference_price"], last["adj_close"])
    assert math.isclose(body["prediction"], last["adj_close"] * (1 + body["expected_return"]))
    manager = get_manager()
    served_model = manager.get(model)
    if model == "ensemble":
        members = {name: manager.get_version(vid).learner.predict(rows).expected_return[-1:]
                   for name, vid in served_model.members.items()}
        expected = served_model.learner.predict_members(members).expected_return[0]
    else:  # the LSTM sees the same sequence_length rows as on the full history
        expected = served_model.learner.predict(rows).expected_return[-1]
    assert math.isclose(body["expected_return"], float(expected), rel_tol=1e-5, abs_tol=1e-9)


def test_prophet_and_ensemble_need_a_ticker(client, served):
    for model in ("prophet_forecaster", "ensemble"):
        response = client.post("/predict", {"features": [0.1] * 20, "model_name": model}, format="json")
        assert response.status_code == 400
        assert _error_names(response, "features") and "ticker" in response.json()["detail"]


def test_batch_of_vectors_and_of_tickers(client, served):
    vectors = [_vector(served, "xgboost_classifier", t) for t in served.tickers]
    response = client.post("/predict/batch", {"model_name": "xgboost_classifier", "instances": vectors},
                           format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == len(vectors) and body["model_version"] == "1.0.0"
    again = client.post("/predict/batch", {"model_name": "xgboost_classifier", "instances": vectors}, format="json")
    assert again.json()["cached"] == 0  # vector batches skip the cache unless ML_PREDICTION_CACHE_VECTOR_BATCHES
    single = client.post("/predict", {"features": vectors[1], "model_name": "xgboost_classifier"},
                         format="json").json()
    assert math.isclose(body["predictions"][1]["expected_return"], single["expected_return"])

    response = client.post("/predict/batch", {"model_name": "ensemble", "instances": ["XOM", "AAPL", "MSFT"]},
                           format="json")
    assert response.status_code == 200
    assert [p["ticker"] for p in response.json()["predictions"]] == ["XOM", "AAPL", "MSFT"]


def test_batch_limits_and_mixed_kinds(client, served, settings):
    settings.ML_MAX_BATCH_SIZE = 3
    too_many = client.post("/predict/batch", {"model_name": "ensemble", "instances": ["AAPL"] * 4}, format="json")
    assert too_many.status_code == 413 and _error_names(too_many, "instances")
    mixed = client.post("/predict/batch", {"model_name": "xgboost_classifier", "instances": ["AAPL", [1.0]]},
                        format="json")
    assert mixed.status_code == 400 and _error_names(mixed, "instances[1]")
    empty = client.post("/predict/batch", {"model_name": "xgboost_classifier", "instances": []}, format="json")
    assert empty.status_code == 400 and _error_names(empty, "instances")
    unknown = client.post("/predict/batch", {"model_name": "xgboost_classifier", "instances": ["AAPL", "ZZZZ"]},
                          format="json")
    assert unknown.status_code == 404 and _error_names(unknown, "instances[1]")
    wrong = client.post("/predict/batch", {"model_name": "xgboost_classifier", "instances": [[1.0, 2.0]]},
                        format="json")
    assert wrong.status_code == 400 and _error_names(wrong, "instances[0]")


# --------------------------------------------------------------------------------------------------
# bad input: 4xx naming the field, never a 500



def _raw(client, body: str, **extra):
    return client.post("/predict", data=body, content_type="application/json", **extra)


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ('{"features": [1, 2, 3], "model_name": "xgboost_classifier"}', 400, "features"),
        ('{"features": [NaN, 1], "model_name": "xgboost_classifier"}', 400, "features"),
        ('{"features": ["NaN", 1], "model_name": "xgboost_classifier"}', 400, "features"),
        ('{"features": [Infinity], "model_name": "xgboost_classifier"}', 400, "features"),
        ('{"features": ["Infinity"], "model_name": "xgboost_classifier"}', 400, "features"),
        ('{"features": [-Infinity], "model_name": "xgboost_classifier"}', 400, "features"),
        ('{"features": [1e400], "model_name": "xgboost_classifier"}', 400, "features"),
        ('{"features": [null], "model_name": "xgboost_classifier"}', 400, "features"),
        ('{"features": [true, 1.0], "model_name": "xgboost_classifier"}', 400, "features"),
        ('{"features": [[1.0]], "model_name": "xgboost_classifier"}', 400, "features"),
        ('{"features": "1,2,3", "model_name": "xgboost_classifier"}', 400, "features"),
        ('{"features": [], "model_name": "xgboost_classifier"}', 400, "features"),
        ('{"features": [1.0]}', 400, "model_name"),
        ('{"features": [1.0], "model_name": "Bad Name!"}', 400, "model_name"),
        ('{"features": [1.0], "model_name": "no_such_model"}', 404, "model_name"),
        ('{"ticker": "ZZZZ", "model_name": "xgboost_classifier"}', 404, "ticker"),
        ('{"ticker": "not a ticker", "model_name": "xgboost_classifier"}', 400, "ticker"),
        ('{"ticker": 42, "model_name": "xgboost_classifier"}', 400, "ticker"),
        ('{"ticker": "AAPL", "features": [1.0], "model_name": "xgboost_classifier"}', 400, "features"),
        ('{"model_name": "xgboost_classifier"}', 400, "features"),
        ('{"features": [1.0], "model_name": "xgboost_classifier", "reference_price": -1}', 400, "reference_price"),
        ('{"features": [1.0], "model_name": "xgboost_classifier", "reference_price": "NaN"}', 400,
         "reference_price"),
        ('{"instances": [[1.0]], "model_name": "xgboost_classifier"}', 400, "instances"),
        ('[1, 2, 3]', 400, "non_field_errors"),
        ('{"features": [1.0', 400, "JSON parse error"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(client, body, code, field):
    response = _raw(client, body)
    assert response.status_code == code, response.content
    assert _error_names(response, field), response.json()


def test_oversized_body_and_wrong_content_type(client, settings):
    settings.ML_API_MAX_BODY_BYTES = 2048
    big = json.dumps({"features": [0.123456789] * 400, "model_name": "xgboost_classifier"})
    response = _raw(client, big)
    assert response.status_code == 413 and _error_names(response, "body")
    response = client.post("/predict", data="features=1", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415


def test_auth_rules(client, staff, monkeypatch):
    anonymous = APIClient()
    for method, path in [("get", "/models"), ("post", "/predict"), ("post", "/predict/batch"),
                         ("get", "/recommendations"), ("get", "/models/ensemble/versions"), ("post", "/retrain"),
                         ("post", "/models/ensemble/load"), ("delete", "/models/ensemble")]:
        assert getattr(anonymous, method)(path).status_code == 401, path
    for method, path in [("post", "/retrain"), ("post", "/models/ensemble/load"), ("delete", "/models/ensemble")]:
        assert getattr(client, method)(path).status_code == 403, path
    assert anonymous.get("/health").status_code == 200


def test_retrain_is_queued_for_staff_as_a_deduplicated_pipeline_run(staff, served, monkeypatch):
    from training.models import PipelineRun, RetrainTrigger
    from training.orchestrator import dispatch

    chains = []  # the Celery chain the orchestrator would send (the broker is not what this test checks)
    monkeypatch.setattr(dispatch, "start_chain",
                        lambda *, run_id, generation: chains.append(run_id) or f"task-{run_id}")
    ticker = served.tickers[0]
    response = staff.post("/retrain", {"tickers": [ticker.lower()], "reason": "drift seen"}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["message"] == "Training task queued" and body["timestamp"] and body["deduplicated"] is False
    run = PipelineRun.objects.get(pk=body["run_id"])
    assert run.trigger == "api" and run.tickers == [ticker] and run.reason == "drift seen"
    assert run.requested_by.startswith("staff-") and chains == [run.pk] and body["status"] == run.status

    again = staff.post("/retrain", {"tickers": [ticker]}, format="json").json()
    assert again["run_id"] == run.pk and again["deduplicated"] is True and chains == [run.pk]
    assert RetrainTrigger.objects.filter(pipeline_run=run).count() == 2

    universe = staff.post("/retrain")
    assert universe.status_code == 202 and universe.json()["run_id"] != run.pk
    assert PipelineRun.objects.get(pk=universe.json()["run_id"]).scope == "universe"

    for bad in (["not a ticker"], ["ZZZZNOPE"]):
        before = PipelineRun.objects.count()
        refused = staff.post("/retrain", {"tickers": bad}, format="json")
        assert refused.status_code == 400 and _error_names(refused, "tickers"), refused.content
        assert PipelineRun.objects.count() == before
    assert "ZZZZNOPE" in refused.json()["detail"]


def test_unload_then_load(staff, client, served):
    body = {"features": _vector(served, "xgboost_classifier"), "model_name": "xgboost_classifier"}
    assert client.post("/predict", body, format="json").status_code == 200
    response = staff.delete("/models/xgboost_classifier")
    assert response.status_code == 200 and response.json()["unloaded_versions"] == ["xgboost_classifier@1.0.0"]
    gone = client.post("/predict", body, format="json")
    assert gone.status_code == 503 and "/models/xgboost_classifier/load" in gone.json()["detail"]
    statuses = {m["name"]: m["status"] for m in client.get("/models").json()}
    assert statuses["xgboost_classifier"] == "unloaded"
    assert "xgboost_classifier" in staff.get("/health").json()["unloaded"]
    loaded = staff.post("/models/xgboost_classifier/load")
    assert loaded.status_code == 200 and loaded.json()["model_version"] == "1.0.0"
    assert client.post("/predict", body, format="json").status_code == 200
    assert staff.delete("/models/no_such_model").status_code == 404
    assert staff.post("/models/no_such_model/load").status_code == 404
    assert staff.post("/models/Bad!/load").status_code == 404


def _collector_sees(obj) -> bool:
    return any(o is obj for o in gc.get_objects())  # frozen objects are not listed


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_a_started_worker_freezes_its_heap_and_a_dropped_model_is_still_collected(staff, client, served):
    body = {"features": _vector(served, "xgboost_classifier"), "model_name": "xgboost_classifier"}
    assert gc.get_freeze_count() == 0  # a fresh process (the fixture's reset)
    assert client.post("/predict", body, format="json").status_code == 200
    learner = get_manager().get("xgboost_classifier").learner
    assert gc.get_freeze_count() > 0 and not _collector_sees(learner)  # full collections skip the models
    made_after = _Cycle()
    assert _collector_sees(made_after)  # what requests create is collected as before
    del made_after

    # a cycle hanging off a served model, frozen with it as a model's own cycles are at its load:
    # once the model is dropped, only a collection with the freeze undone can free it
    cycle = _Cycle()
    learner._test_cycle = cycle
    gone = weakref.ref(cycle)
    heap_freeze(full=False)
    assert not _collector_sees(cycle)
    del cycle, learner
    response = staff.delete("/models/xgboost_classifier")
    assert response.status_code == 200 and response.json()["unloaded_versions"] == ["xgboost_classifier@1.0.0"]
    assert gone() is None
    assert gc.get_freeze_count() > 0  # and froze again what is left
    get_manager().reset()
    assert gc.get_freeze_count() == 0


def test_model_versions(client, served):
    response = client.get("/models/xgboost_classifier/versions")
    assert response.status_code == 200
    (row,) = response.json()
    assert row["version"] == "1.0.0" and row["status"] == "active" and row["loaded"] is True
    assert row["artifact_sha256"] == served.versions["xgboost_classifier"].artifact_sha256
    assert client.get("/models/nothing_here/versions").status_code == 404


# --------------------------------------------------------------------------------------------------
# failures, swaps, cache, log


def test_tampered_artifact_degrades_health_and_gives_503(client, staff, served):
    version = served.versions["lstm_predictor"]
    path = django_settings.ML_MODELS_PATH / version.artifact_path
    original = path.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    get_manager().reset()

    health = staff.get("/health").json()
    assert health["status"] == "degraded"
    assert any(r.startswith("Failed to load model lstm_predictor@1.0.0") and "sha256" in r for r in health["reasons"])
    assert "lstm_predictor" not in health["models"]
    response = client.post("/predict", {"ticker": "AAPL", "model_name": "lstm_predictor"}, format="json")
    assert response.status_code == 503
    assert "Failed to load model lstm_predictor@1.0.0" in response.json()["detail"]
    # the ensemble depends on it; the others keep serving
    assert client.post("/predict", {"ticker": "AAPL", "model_name": "ensemble"}, format="json").status_code == 503
    ok = client.post("/predict", {"ticker": "AAPL", "model_name": "xgboost_classifier"}, format="json")
    assert ok.status_code == 200
    statuses = {m["name"]: m for m in client.get("/models").json()}
    assert statuses["lstm_predictor"]["status"] == "failed" and "sha256" in statuses["lstm_predictor"]["error"]
    # the monitoring alert is open, and resolved by a good load
    from monitoring.models import Alert

    assert Alert.objects.filter(kind="model_load_failed", key="lstm_predictor", resolved=False).exists()
    path.write_bytes(original)
    assert staff.post("/models/lstm_predictor/load").status_code == 200
    assert not Alert.objects.filter(kind="model_load_failed", key="lstm_predictor", resolved=False).exists()
    assert client.post("/predict", {"ticker": "AAPL", "model_name": "lstm_predictor"}, format="json").status_code == 200


def _promote_new_xgboost(served):
    artifacts = trained_artifacts(served.frame, served.feature_columns)
    return register(name="xgboost_classifier", data=artifacts["xgboost_classifier"],
                    fsv=served.feature_set_version, data_hash="h2")


def test_promotion_swaps_the_served_version(client, served):
    body = {"features": _vector(served, "xgboost_classifier"), "model_name": "xgboost_classifier"}
    first = client.post("/predict", body, format="json").json()
    assert first["model_version"] == "1.0.0" and first["cached"] is False
    again = client.post("/predict", body, format="json").json()
    assert again["cached"] is True
    new = _promote_new_xgboost(served)
    assert new.version == "1.1.0" and new.status == "active"
    after = client.post("/predict", body, format="json")
    assert after.status_code == 200
    assert after.json()["model_version"] == "1.1.0" and after.json()["cached"] is False  # new version, new key
    assert {m["name"]: m["version"] for m in client.get("/models").json()}["xgboost_classifier"] == "1.1.0"


def test_promotion_under_concurrent_requests_never_fails_one(served, settings, monkeypatch):
    """Threads keep predicting while a new version is promoted and (slowly) loaded: the old version
    answers until the new one is ready, then the new one; no request fails. The threads touch no
    database (the main thread reads the registry), so the test transaction stays private."""
    from inference import model_manager

    settings.ML_PREDICTION_CACHE_SECONDS = 0
    settings.ML_ACTIVE_VERSION_CHECK_SECONDS = 3600
    manager = get_manager()
    manager.refresh(force=True)
    features = _vector(served, "xgboost_classifier")
    assert services.predict(model_name="xgboost_classifier", features=features)["model_version"] == "1.0.0"

    real_load = model_manager.load_version

    def slow_load(*, version):
        time.sleep(0.3)
        return real_load(version=version)

    monkeypatch.setattr(model_manager, "load_version", slow_load)
    _promote_new_xgboost(served)
    seen: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker():
        while not stop.is_set():
            try:
                seen.append(services.predict(model_name="xgboost_classifier", features=features)["model_version"])
            except BaseException as exc:  # noqa: BLE001 - the assertion reports it
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    manager.refresh(force=True)  # the registry now says 1.1.0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and seen[-20:].count("1.1.0") < 20:
        time.sleep(0.02)
    stop.set()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert "1.0.0" in seen and seen[-1] == "1.1.0"
    switch = seen.index("1.1.0")
    assert switch > 0 and len(seen) > switch


def test_cache_hit_ratio_grows_and_predictions_are_logged(client, staff, served, settings):
    settings.ML_PREDICTION_CACHE_VECTOR_BATCHES = True
    assert staff.get("/health").json()["cache"]["hits"] == 0
    for _ in range(3):
        assert client.post("/predict", {"ticker": "MSFT", "model_name": "ensemble"}, format="json").status_code == 200
    vectors = [_vector(served, "xgboost_classifier", t) for t in served.tickers]
    for _ in range(2):
        client.post("/predict/batch", {"model_name": "xgboost_classifier", "instances": vectors}, format="json")
    cache = staff.get("/health").json()["cache"]
    assert cache["hits"] == 2 + len(vectors) and cache["misses"] == 1 + len(vectors)
    assert cache["hit_ratio"] > 0.5
    written = services.flush_prediction_log()
    assert written == 3 + 2 * len(vectors)
    assert PredictionLog.objects.count() == written
    rows = list(PredictionLog.objects.filter(model_name="ensemble").order_by("id"))
    assert [r.cached for r in rows] == [False, True, True]
    assert all(r.ticker == "MSFT" and r.model_version_id == served.versions["ensemble"].pk for r in rows)
    assert all(len(r.input_hash) == 64 and r.latency_ms >= 0 and r.feature_date for r in rows)
    assert len({r.input_hash for r in rows}) == 1
    # counters reach the shared totals with the flush
    assert staff.get("/health").json()["cache"]["all_workers"]["hits"] == cache["hits"]


def test_lru_cap(client, served, settings):
    settings.ML_MAX_LOADED_MODELS = 2
    get_manager().reset()
    for model in ("xgboost_classifier", "lstm_predictor", "prophet_forecaster", "ensemble", "xgboost_classifier"):
        response = client.post("/predict", {"ticker": "JPM", "model_name": model}, format="json")
        assert response.status_code == 200, response.content
        assert len(get_manager().status()["loaded"]) <= 2


def test_quantized_lstm_stays_within_tolerance(client, served, settings):
    from inference.model_manager import quantization_check

    learner = get_manager().get("lstm_predictor").learner
    check = quantization_check(learner, rows=32, repeats=2)
    assert check["max_abs_diff"] < 0.5 and check["float_ms"] > 0 and check["quantized_ms"] > 0
    settings.ML_LSTM_QUANTIZE = True
    settings.ML_LSTM_QUANTIZE_TOLERANCE = 10.0  # accept any difference: only speed decides
    get_manager().reset()
    response = client.post("/predict", {"ticker": "AAPL", "model_name": "lstm_predictor"}, format="json")
    assert response.status_code == 200
    info = get_manager().get("lstm_predictor").quantization
    assert set(info) >= {"used", "float_ms", "quantized_ms", "max_abs_diff"}


def test_a_slow_prediction_logs_the_specs_warning(client, served, settings, caplog):
    settings.ML_SLOW_PREDICTION_MS = 0  # every call is "slow"
    with caplog.at_level("WARNING", logger="inference.services"):
        assert client.post("/predict", {"ticker": "AAPL", "model_name": "ensemble"}, format="json").status_code == 200
    assert any(r.getMessage().startswith("Prediction latency exceeded 0ms: ensemble@1.0.0 took") for r in caplog.records)
    caplog.clear()
    settings.ML_SLOW_PREDICTION_MS = 60_000
    with caplog.at_level("WARNING", logger="inference.services"):
        client.post("/predict", {"ticker": "MSFT", "model_name": "ensemble"}, format="json")
    assert not [r for r in caplog.records if "latency exceeded" in r.getMessage()]


def test_lstm_served_through_onnx_runtime_gives_the_same_forecasts(client, served, settings):
    pytest.importorskip("onnxruntime")
    body = {"ticker": "AAPL", "model_name": "lstm_predictor"}
    settings.ML_PREDICTION_CACHE_SECONDS = 0  # every request runs the network
    by_torch = client.post("/predict", body, format="json").json()
    settings.ML_LSTM_ONNX = True
    settings.ML_LSTM_QUANTIZE_TOLERANCE = 1e-4
    get_manager().reset()
    by_onnx = client.post("/predict", body, format="json").json()
    info = get_manager().get("lstm_predictor").onnx
    assert set(info) >= {"used", "torch_ms_1", "onnx_ms_1", "torch_ms_256", "onnx_ms_256", "max_abs_diff"}
    assert info["max_abs_diff"] < 1e-4
    assert by_onnx["expected_return"] == pytest.approx(by_torch["expected_return"], rel=1e-4, abs=1e-7)
    from inference.model_manager import onnx_check

    learner = get_manager().get("lstm_predictor").learner
    learner.use_runner(onnx_check(learner, repeats=2)["runner"])  # served by ONNX Runtime, faster or not
    assert client.post("/predict", body, format="json").json()["expected_return"] == pytest.approx(
        by_torch["expected_return"], rel=1e-4, abs=1e-7)


# --------------------------------------------------------------------------------------------------
# property: any finite vector of the right length is answered; anything else is a 4xx

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
not_a_number = st.one_of(st.just(float("nan")), st.just(float("inf")), st.just(float("-inf")), st.text(max_size=5),
                         st.booleans(), st.none(), st.lists(finite, max_size=2), st.dictionaries(st.text(max_size=3),
                                                                                                  finite, max_size=1))


def test_any_finite_vector_of_the_right_length_is_answered(client, served):
    lengths = {m: len(served.versions[m].feature_columns) for m in ("xgboost_classifier", "lstm_predictor")}

    @hsettings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(data=st.data(), model=st.sampled_from(sorted(lengths)))
    def check(data, model):
        n = lengths[model]
        vector = data.draw(st.lists(finite, min_size=n, max_size=n))
        response = client.post("/predict", {"features": vector, "model_name": model}, format="json")
        assert response.status_code == 200, response.content
        assert np.isfinite(response.json()["expected_return"])

    check()


def test_anything_else_is_a_4xx(client, served):
    n = len(served.versions["xgboost_classifier"].feature_columns)
    wrong_length = st.lists(finite, max_size=n + 5).filter(lambda v: len(v) != n)

    @st.composite
    def poisoned(draw):
        vector = draw(st.lists(finite, min_size=n, max_size=n))
        vector[draw(st.integers(0, n - 1))] = draw(not_a_number)
        return vector

    bodies = st.one_of(
        wrong_length.map(lambda v: {"features": v, "model_name": "xgboost_classifier"}),
        poisoned().map(lambda v: {"features": v, "model_name": "xgboost_classifier"}),
        not_a_number.map(lambda v: {"features": v, "model_name": "xgboost_classifier"}),
        st.dictionaries(st.text(max_size=8), st.one_of(finite, st.text(max_size=8)), max_size=3),
    )

    @hsettings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body=bodies)
    def check(body):
        response = _raw(client, json.dumps(body, allow_nan=True))
        assert 400 <= response.status_code < 500, (body, response.content)

    check()
