"""The daily batch prediction: ``inference.services.batch_predict`` and ``manage.py predict_universe``
write ``DailyPrediction`` rows (upserted) with ranks and BUY/HOLD/SELL; ``GET /recommendations``
serves them."""

from __future__ import annotations

import io
import json
import math
from datetime import date

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from inference.models import DailyPrediction
from inference.services import batch_predict, recommendations_for
from tests.integration.test_inference_api import make_client, served_registry

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def served(settings, tmp_path):
    yield from served_registry(settings, tmp_path)


@pytest.fixture
def client(served):
    return make_client(staff=False)

MODELS = {"ensemble", "lstm_predictor", "prophet_forecaster", "xgboost_classifier"}


def test_recommendation_rule():
    import numpy as np

    er = np.array([0.03, -0.02, 0.01, 0.0, 0.05, -0.04, 0.02, -0.01, 0.005, 0.015])
    prob = np.array([0.7, 0.3, 0.6, 0.5, 0.4, 0.2, 0.65, 0.45, 0.52, 0.58])
    ranks, labels = recommendations_for(er, prob)
    assert sorted(ranks) == list(range(1, 11)) and ranks[4] == 1 and ranks[5] == 10
    # top 2 by expected return: 0.05 (prob 0.4: not BUY) and 0.03 (BUY); bottom 2: -0.04 and -0.02 (SELL)
    assert labels[0] == "BUY" and labels[4] == "HOLD"
    assert labels[5] == "SELL" and labels[1] == "SELL" and labels.count("SELL") == 2
    assert labels.count("BUY") == 1


def test_batch_predict_writes_ranked_recommendations(served, settings):
    settings.ML_RECOMMENDATION_BUY_FRACTION = 0.5
    settings.ML_RECOMMENDATION_SELL_FRACTION = 0.5
    result = batch_predict()
    last_day = served.frame["date"].max().date()
    assert result["date"] == last_day.isoformat() and result["tickers"] == 4 and not result["errors"]
    assert set(result["models"]) == MODELS and result["preferred_model"] == "ensemble"
    for name, info in result["models"].items():
        assert info["rows"] == 4 and info["version"] == "1.0.0", name
        rows = list(DailyPrediction.objects.filter(model_version__model__name=name).order_by("rank"))
        assert [r.rank for r in rows] == [1, 2, 3, 4]
        assert all(a.expected_return >= b.expected_return for a, b in zip(rows, rows[1:], strict=False))
        for r in rows:
            expected = "HOLD"
            if r.rank <= 2 and r.prob_up > 0.5:
                expected = "BUY"
            elif r.rank >= 3 and r.prob_up < 0.5:
                expected = "SELL"
            assert r.recommendation == expected and r.date == last_day and r.horizon_days == 5
            close = served.frame.loc[(served.frame["ticker"] == r.ticker.symbol)
                                     & (served.frame["date"].dt.date == last_day), "adj_close"].iloc[0]
            assert math.isclose(r.predicted_price, close * (1 + r.expected_return))
            assert math.isclose(r.confidence, abs(2 * r.prob_up - 1), abs_tol=1e-9)
    # an upsert: running again keeps one row per (date, ticker, version)
    count = DailyPrediction.objects.count()
    assert batch_predict()["models"]["ensemble"]["rows"] == 4
    assert DailyPrediction.objects.count() == count == 16


def test_batch_agrees_with_the_api(client, served):
    batch_predict(model_names=["lstm_predictor", "ensemble"])
    assert set(DailyPrediction.objects.values_list("model_version__model__name", flat=True).distinct()) == {
        "lstm_predictor", "ensemble"}
    for row in DailyPrediction.objects.select_related("ticker", "model_version__model"):
        body = client.post("/predict", {"ticker": row.ticker.symbol, "model_name": row.model_version.model.name},
                           format="json").json()
        assert math.isclose(body["expected_return"], row.expected_return, rel_tol=1e-5, abs_tol=1e-9)
        assert body["feature_date"] == row.date.isoformat()


def test_batch_scores_each_member_once(client, served, monkeypatch):
    """The ensemble reuses the scores of members already scored in the same batch (Prophet's
    per-ticker forecasts are most of a daily batch's time); its rows still agree with the API."""
    from training.learners.prophet_learner import ProphetLearner

    calls = []
    original = ProphetLearner.predict

    def counted(self, frame):
        calls.append(len(frame))
        return original(self, frame)

    monkeypatch.setattr(ProphetLearner, "predict", counted)
    result = batch_predict()
    assert set(result["models"]) == MODELS and not result["errors"]
    assert calls == [4]  # once for prophet_forecaster and the ensemble together
    for row in DailyPrediction.objects.filter(model_version__model__name="ensemble").select_related("ticker"):
        body = client.post("/predict", {"ticker": row.ticker.symbol, "model_name": "ensemble"}, format="json").json()
        assert math.isclose(body["expected_return"], row.expected_return, rel_tol=1e-5, abs_tol=1e-9)


def test_batch_on_an_earlier_date_uses_only_the_history_before_it(served):
    frame = served.frame
    day = sorted(frame["date"].unique())[-30]
    result = batch_predict(as_of=day.date(), model_names=["lstm_predictor"], tickers=["AAPL", "MSFT"])
    assert result["date"] == day.date().isoformat() and result["tickers"] == 2
    from inference.model_manager import get_manager

    learner = get_manager().get("lstm_predictor").learner
    for row in DailyPrediction.objects.select_related("ticker"):
        history = frame.loc[(frame["ticker"] == row.ticker.symbol) & (frame["date"] <= day)].reset_index(drop=True)
        assert math.isclose(row.expected_return, float(learner.predict(history).expected_return[-1]), rel_tol=1e-5)


def test_predict_universe_command(served):
    out = io.StringIO()
    call_command("predict_universe", "--json", stdout=out)
    summary = json.loads(out.getvalue())
    assert set(summary["models"]) == MODELS and summary["tickers"] == 4
    out = io.StringIO()
    call_command("predict_universe", "--models", "xgboost_classifier", stdout=out)
    assert "xgboost_classifier@1.0.0: 4 rows" in out.getvalue()
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--date"):
        call_command("predict_universe", "--date", "yesterday")


def test_recommendations_endpoint(client, served):
    assert client.get("/recommendations").status_code == 404  # nothing predicted yet
    batch_predict()
    response = client.get("/recommendations")
    assert response.status_code == 200
    body = response.json()
    assert body["model_name"] == "ensemble" and body["date"] == served.frame["date"].max().date().isoformat()
    assert body["count"] == body["total"] == 4 and body["horizon_days"] == 5
    assert [r["rank"] for r in body["recommendations"]] == [1, 2, 3, 4]
    assert {"ticker", "recommendation", "expected_return", "confidence", "prob_up", "predicted_price"} <= set(
        body["recommendations"][0])
    top = client.get("/recommendations", {"top": 2, "date": body["date"], "model_name": "xgboost_classifier"}).json()
    assert top["count"] == 2 and top["total"] == 4 and top["model_name"] == "xgboost_classifier"
    holds = client.get("/recommendations", {"recommendation": "HOLD"}).json()
    assert all(r["recommendation"] == "HOLD" for r in holds["recommendations"])
    assert client.get("/recommendations", {"date": "2001-01-01"}).status_code == 404
    for bad in ({"date": "yesterday"}, {"top": 0}, {"top": "ten"}, {"recommendation": "MAYBE"}):
        response = client.get("/recommendations", bad)
        assert response.status_code == 400 and next(iter(bad)) in response.json()["detail"]
    assert APIClient().get("/recommendations").status_code == 401
    assert date.fromisoformat(body["date"])
