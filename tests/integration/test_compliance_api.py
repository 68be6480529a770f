"""Books and records through the API and the daily batch (issue 16, item 3), on the small real
registry of ``tests.served_registry``: every served prediction of a ticker (``POST /predict``,
``POST /predict/batch``) and every recommendation of ``batch_predict`` becomes
a hash-chained record with the model version, input hash, output, time and the requester's pseudonym."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from inference import compliance, services
from inference.models import ComplianceRecord, DailyPrediction, PredictionLog, RequesterPseudonym
from tests.integration.test_inference_api import _vector, served_registry

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.fixture
def served(settings, tmp_path):
    yield from served_registry(settings, tmp_path)


def test_served_predictions_and_recommendations_are_recorded_and_verify(served):
    user = get_user_model().objects.create_user("records-api-heidi")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")

    one = client.post("/predict", {"ticker": "AAPL", "model_name": "xgboost_classifier"}, format="json")
    assert one.status_code == 200, one.content
    many = client.post("/predict/batch", {"model_name": "xgboost_classifier", "instances": ["MSFT", "JPM"]},
                       format="json")
    assert many.status_code == 200, many.content
    vector = client.post("/predict", {"features": _vector(served, "xgboost_classifier"),
                                      "model_name": "xgboost_classifier"}, format="json")
    assert vector.status_code == 200
    assert ComplianceRecord.objects.count() == 0  # nothing on the request path: written with the log
    assert services.flush_prediction_log() == 4

    pseudonym = RequesterPseudonym.objects.get(user=user).pseudonym
    records = list(ComplianceRecord.objects.order_by("seq"))
    assert [(r.kind, r.ticker) for r in records] == [("prediction", "AAPL"), ("prediction", "MSFT"),
                                                      ("prediction", "JPM")]
    version = served.versions["xgboost_classifier"]
    body = one.json()
    first = records[0]
    assert (first.model_name, first.model_version, first.model_version_ref) == (
        "xgboost_classifier", version.version, version.pk)
    assert {r.requester for r in records} == {pseudonym}
    assert set(PredictionLog.objects.values_list("requester", flat=True)) == {pseudonym}
    output = json.loads(first.output)
    assert output["prediction"] == pytest.approx(body["prediction"])
    assert output["expected_return"] == pytest.approx(body["expected_return"])
    assert output["prob_up"] == pytest.approx(body["prob_up"]) and output["prediction_type"] == body["prediction_type"]
    # what the client was told about the price and the time the features describe, as it was told
    assert output["reference_price"] == pytest.approx(body["reference_price"])
    assert (output["direction"], output["intraday"]) == (body["direction"], body["intraday"])
    assert body["intraday"] is False
    assert output["as_of"].replace("+00:00", "Z")[:19] == body["as_of"].replace("+00:00", "Z")[:19]
    assert first.input_hash == PredictionLog.objects.filter(ticker="AAPL").get().input_hash

    result = services.batch_predict(model_names=["xgboost_classifier"])
    rows = result["models"]["xgboost_classifier"]["rows"]
    assert rows == DailyPrediction.objects.count() > 0
    recommendations = list(ComplianceRecord.objects.filter(kind="recommendation").order_by("seq"))
    assert len(recommendations) == rows and {r.requester for r in recommendations} == {compliance.BATCH_REQUESTER}
    for record in recommendations:
        stored = DailyPrediction.objects.get(ticker__symbol=record.ticker, model_version=version)
        data = json.loads(record.output)
        assert (data["recommendation"], data["rank"], data["date"]) == (
            stored.recommendation, stored.rank, stored.date.isoformat())
    assert compliance.verify_records().ok
