"""Real-time data into the API (issue 16, item 2): intraday quotes update each ticker's "today so far"
bar in the online store (POST /quotes, or the Polygon snapshot through the stand-in server), and
POST /predict by ticker during the session recomputes the ticker's features with that partial bar
(the same engine, one more row), says so (``intraday``, ``as_of``), falls back to the end-of-day
prediction with the reason when the quote is stale or missing, and never writes the offline store.

The served registry is the bundled sample (AAPL, JPM, MSFT, XOM up to Friday 2018-05-18); the
session is Monday 2018-05-21, and the clock the staleness check reads is set to it."""

from __future__ import annotations

import hashlib
import io
import json
import math
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import RequestFactory
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from features.engine import compute_features
from features.models import NewsItem, PriceBar, Ticker
from features.providers import reset_limiters
from features.selectors import feature_store_for, get_online_features
from features.services.build_inputs import engine_window
from inference import intraday, prediction_log
from inference.model_manager import get_manager
from inference.models import ComplianceRecord, PredictionLog
from inference.quotes import today_bars
from monitoring.models import CostRecord
from tests.fakes.provider_server import FakeProviderServer, snapshot_item
from tests.integration.test_inference_api import make_token, served_registry
from tests.wsgi import call_wsgi

pytestmark = [pytest.mark.django_db]

NY = ZoneInfo("America/New_York")
KEY = "TESTKEY-123456"
FRIDAY = date(2018, 5, 18)  # the sample's last day: the stored features' date
SESSION = date(2018, 5, 21)  # the Monday after
QUOTE_TIME = datetime(2018, 5, 21, 10, 30, tzinfo=NY)
MODELS = ["xgboost_classifier", "lstm_predictor", "prophet_forecaster", "ensemble"]


@pytest.fixture
def served(settings, tmp_path, keep_test_connection):
    intraday.clear_caches()
    yield from served_registry(settings, tmp_path)
    intraday.clear_caches()


@pytest.fixture
def clock(monkeypatch):
    """The time the staleness check reads (``inference.intraday.now``): 10:31 New York on the session."""
    moment = {"now": QUOTE_TIME + timedelta(minutes=1)}
    monkeypatch.setattr(intraday, "now", lambda: moment["now"])
    return moment


@pytest.fixture
def server():
    srv = FakeProviderServer(api_keys=(KEY,))
    yield srv
    srv.close()


@pytest.fixture
def polygon(settings, monkeypatch, server):
    """The Polygon provider pointed at the stand-in server (no limits, $0.001 a request)."""
    settings.PIPELINE_CONFIG = settings.PIPELINE_CONFIG.with_overrides({"providers": {"polygon": {
        "requests_per_minute": 60_000, "requests_per_day": 0, "cost_per_call_usd": 0.001,
        "timeout_seconds": 5, "max_retries": 1}}})
    monkeypatch.setenv("POLYGON_BASE_URL", server.base_url)
    monkeypatch.setenv("POLYGON_API_KEY", KEY)
    reset_limiters()
    yield server
    reset_limiters()


def token_of(*, staff: bool, perms: tuple[str, ...] = ()) -> str:
    user = get_user_model().objects.create_user(f"u-{uuid.uuid4().hex[:8]}", is_staff=staff)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return Token.objects.create(user=user).key


def api(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def wsgi_predict(token: str, ticker: str, model: str) -> tuple[int, dict]:
    """POST /predict through the served WSGI application (``investml.wsgi``), as the server calls it."""
    environ = RequestFactory().generic("POST", "/predict", data=json.dumps({"ticker": ticker, "model_name": model}),
                                       content_type="application/json",
                                       HTTP_AUTHORIZATION=f"Token {token}").environ
    status, _, content = call_wsgi(environ)
    return status, json.loads(content)


def last_bar(ticker: str) -> PriceBar:
    return PriceBar.objects.filter(ticker__symbol=ticker).order_by("-date").first()


def snapshot_of(ticker: str, *, move: float, at: datetime, volume: float = 2_000_000.0) -> dict:
    close = last_bar(ticker).close
    price = round(close * (1 + move), 4)
    return snapshot_item(ticker, price=price, time=pd.Timestamp(at), open=round(close * 1.002, 4),
                         high=max(price, close * 1.002) * 1.001, low=min(price, close * 1.002) * 0.999,
                         volume=volume)


def store_files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------------
# the bar: the Polygon stand-in during a session


@pytest.mark.parametrize("model", MODELS)
def test_predict_during_the_session_uses_the_polled_partial_bar(served, clock, polygon, settings, model):
    token = make_token(staff=False)
    status, eod = wsgi_predict(token, "AAPL", model)
    assert status == 200, eod
    assert eod["intraday"] is False and eod["intraday_reason"] == "no_quote"
    assert eod["feature_date"] == FRIDAY.isoformat() and eod["as_of"] == "2018-05-18T20:00:00Z"  # Friday's close

    for ticker in served.tickers:
        polygon.polygon_snapshots[ticker] = snapshot_of(ticker, move=0.06, at=QUOTE_TIME)
    summary = call_command_json("poll_quotes")
    assert summary["stored"] == 4 and summary["calls"] == 1 and summary["error"] == ""
    assert polygon.count(provider="polygon") == 1
    assert CostRecord.objects.filter(source="polygon").count() == 1  # metered as every provider request

    features_before = store_files(Path(settings.ML_FEATURES_PATH))
    bars_before = PriceBar.objects.count()
    status, live = wsgi_predict(token, "AAPL", model)
    assert status == 200, live
    assert live["intraday"] is True and live["intraday_reason"] is None
    assert live["as_of"] == "2018-05-21T14:30:00Z"  # the last trade's time (10:30 New York)
    assert live["feature_date"] == SESSION.isoformat()
    bar = last_bar("AAPL")
    price = polygon.polygon_snapshots["AAPL"]["lastTrade"]["p"]
    assert math.isclose(live["reference_price"], price * bar.adj_close / bar.close, rel_tol=1e-9)
    assert live["prediction"] != eod["prediction"]  # the quote moved 6 %: another forecast
    if model != "xgboost_classifier":  # the tiny test XGBoost (10 trees of depth 3) does not split on the move
        assert live["expected_return"] != eod["expected_return"]
    # the DRF view (Django's test client) answers the same
    view = api(token).post("/predict", {"ticker": "AAPL", "model_name": model}, format="json").json()
    assert view["intraday"] is True and view["as_of"] == live["as_of"] and view["cached"] is True
    assert view["expected_return"] == live["expected_return"]
    # nothing was stored: not the offline store, not the price table
    assert store_files(Path(settings.ML_FEATURES_PATH)) == features_before
    assert PriceBar.objects.count() == bars_before
    assert feature_store_for(version=served.feature_set_version).last_dates()["AAPL"] == FRIDAY
    prediction_log.flush()
    logged = PredictionLog.objects.filter(ticker="AAPL").order_by("created_at")
    assert [r.feature_date for r in logged][-2:] == [SESSION, SESSION]
    # the books and records say which answer was intraday, and the bar's time, as the responses did
    records = [json.loads(r.output) for r in ComplianceRecord.objects.filter(ticker="AAPL").order_by("seq")]
    assert [(r["intraday"], r["as_of"][:19]) for r in records] == [
        (False, "2018-05-18T20:00:00"), (True, "2018-05-21T14:30:00"), (True, "2018-05-21T14:30:00")]
    assert records[1]["reference_price"] == pytest.approx(live["reference_price"])


@pytest.mark.parametrize("model", ["xgboost_classifier", "lstm_predictor"])
def test_the_partial_row_is_the_engine_on_one_more_bar(served, clock, model):
    """The served prediction equals the learner on features computed from scratch: every stored bar of
    AAPL plus the session's bar, through compute_features with the stored market series (the LSTM: on
    that whole history, its last sequence_length rows)."""
    staff = api(make_token(staff=True))
    close = last_bar("AAPL").close
    trades = [{"ticker": "AAPL", "price": round(close * 0.97, 4), "volume": 1200, "time": "2018-05-21T09:31:00-04:00"},
              {"ticker": "AAPL", "price": round(close * 0.95, 4), "volume": 800, "time": "2018-05-21T10:30:00-04:00"},
              {"ticker": "AAPL", "price": round(close * 1.01, 4), "volume": 500, "time": "2018-05-21T10:05:00-04:00"}]
    response = staff.post("/quotes", {"quotes": trades}, format="json")
    assert response.status_code == 200, response.content
    bar = response.json()["bars"][0]
    assert bar["open"] == trades[0]["price"] and bar["close"] == trades[1]["price"]  # the latest trade, not the last sent
    assert bar["high"] == trades[2]["price"] and bar["low"] == trades[1]["price"] and bar["volume"] == 2500
    assert bar["time"] == "2018-05-21T14:30:00Z" and bar["session"] == SESSION.isoformat()

    body = api(make_token(staff=False)).post("/predict", {"ticker": "AAPL", "model_name": model},
                                             format="json").json()
    assert body["intraday"] is True

    rows = pd.DataFrame(list(PriceBar.objects.filter(ticker__symbol="AAPL").order_by("date").values(
        "date", "open", "high", "low", "close", "adj_close", "volume")))
    factor = rows["adj_close"].iloc[-1] / rows["close"].iloc[-1]
    today = {"date": SESSION, "open": bar["open"], "high": bar["high"], "low": bar["low"], "close": bar["close"],
             "adj_close": bar["close"] * factor, "volume": bar["volume"]}
    bars = pd.concat([rows, pd.DataFrame([today])], ignore_index=True).assign(ticker="AAPL")
    bars["date"] = pd.to_datetime(bars["date"])
    market = feature_store_for(version=served.feature_set_version).market()
    features = compute_features(bars, market_returns=market, sentiment=pd.DataFrame(
        {"ticker": [], "date": pd.to_datetime([]), "score": [], "count": []}), dtype=np.float32)
    learner = get_manager().get(model).learner
    assert features["date"].iloc[-1] == pd.Timestamp(SESSION)
    expected = float(learner.predict(features.assign(adj_close=bars["adj_close"].to_numpy())).expected_return[-1])
    assert math.isclose(body["expected_return"], expected, rel_tol=1e-5, abs_tol=1e-9)
    eod = get_online_features(ticker="AAPL", version=served.feature_set_version.pk)
    assert not np.array_equal(features.iloc[-1][eod.columns].to_numpy(dtype=np.float64), eod.as_array())


def test_a_stale_quote_falls_back_to_the_end_of_day_prediction_and_says_so(served, clock, polygon, settings):
    token = make_token(staff=False)
    _, eod = wsgi_predict(token, "MSFT", "ensemble")
    polygon.polygon_snapshots["MSFT"] = snapshot_of("MSFT", move=-0.05, at=QUOTE_TIME)
    call_command("poll_quotes", "--tickers", "MSFT", stdout=io.StringIO())
    _, live = wsgi_predict(token, "MSFT", "ensemble")
    assert live["intraday"] is True and live["expected_return"] != eod["expected_return"]

    clock["now"] = QUOTE_TIME + timedelta(seconds=901)  # ML_INTRADAY_QUOTE_MAX_AGE_SECONDS = 900
    status, stale = wsgi_predict(token, "MSFT", "ensemble")
    assert status == 200
    assert stale["intraday"] is False and stale["intraday_reason"] == "quote_stale"
    assert stale["feature_date"] == FRIDAY.isoformat() and stale["as_of"] == eod["as_of"]
    assert stale["expected_return"] == eod["expected_return"] and stale["reference_price"] == eod["reference_price"]

    settings.ML_INTRADAY_QUOTE_MAX_AGE_SECONDS = 3600  # the setting decides
    _, fresh = wsgi_predict(token, "MSFT", "ensemble")
    assert fresh["intraday"] is True and fresh["expected_return"] == live["expected_return"]
    settings.ML_INTRADAY_ENABLED = False
    _, off = wsgi_predict(token, "MSFT", "ensemble")
    assert off["intraday"] is False and off["intraday_reason"] == "disabled"


def test_reasons_for_the_end_of_day_answer(served, clock):
    token = make_token(staff=False)
    staff = api(make_token(staff=True))
    status, vector = wsgi_predict(token, "JPM", "xgboost_classifier")
    assert vector["intraday_reason"] == "no_quote"
    features = [0.0] * len(served.versions["xgboost_classifier"].feature_columns)
    body = api(token).post("/predict", {"features": features, "model_name": "xgboost_classifier"},
                           format="json").json()
    assert body["intraday"] is False and body["intraday_reason"] == "feature_vector" and body["as_of"] is None
    # a session two trading days after the stored features: the store missed a day's update
    later = {"ticker": "JPM", "price": 100.0, "time": "2018-05-22T10:00:00-04:00"}
    assert staff.post("/quotes", {"quotes": [later]}, format="json").status_code == 200
    clock["now"] = datetime(2018, 5, 22, 10, 1, tzinfo=NY)
    _, behind = wsgi_predict(token, "JPM", "xgboost_classifier")
    assert behind["intraday"] is False and behind["intraday_reason"] == "features_behind"


def test_news_after_the_quote_time_are_not_used_and_the_market_symbol_gives_todays_market(served, clock, settings):
    """Point in time: a headline published before the bar's time counts for the session, one after it
    does not; a fresh bar of ML_INTRADAY_MARKET_SYMBOL gives today's market return (else unknown)."""
    staff = api(make_token(staff=True))
    aapl = Ticker.objects.get(symbol="AAPL")
    for minute, score in ((0, 0.8), (45, -0.9)):  # 10:00 and 10:45; the bar's last trade is at 10:30
        NewsItem.objects.create(ticker=aapl, published_at=datetime(2018, 5, 21, 10, minute, tzinfo=NY),
                                headline=f"news {minute}", sentiment=score, content_hash=f"h{minute}")
    close = last_bar("AAPL").close
    staff.post("/quotes", {"quotes": [{"ticker": "AAPL", "price": close * 1.02, "time": QUOTE_TIME.isoformat()}]},
               format="json")
    manager = get_manager()
    served_model = manager.get("xgboost_classifier")

    def partial_row() -> dict[str, float]:
        from inference.inputs import OnlineSource

        source = OnlineSource(["AAPL"], field="ticker")
        plan = intraday.plan_for(served=served_model, ticker="AAPL", source=source,
                                 feature_date=source.feature_dates(served_model.feature_set_version_id)[0])
        assert plan.intraday, plan.reason
        names, values = plan.source.row(served_model.feature_set_version_id)
        return dict(zip(names, values, strict=True))

    row = partial_row()
    assert row["has_news"] == 1.0 and row["news_count_5"] == 1.0
    assert math.isclose(row["sent_mean_5"], 0.8, rel_tol=1e-6)  # the 10:45 headline is not known at 10:30
    assert math.isnan(row["rel_ret_20"])  # no market bar: today's market return is unknown
    settings.ML_INTRADAY_MARKET_SYMBOL = "XOM"
    xom = last_bar("XOM").close
    staff.post("/quotes", {"quotes": [{"ticker": "XOM", "price": xom * 0.99, "time": QUOTE_TIME.isoformat()}]},
               format="json")
    intraday.clear_caches()
    with_market = partial_row()
    assert math.isfinite(with_market["rel_ret_20"])


def test_the_engine_window_reproduces_the_stored_row(served):
    """engine_window gives the engine what the build gave it: its last row recomputed equals the
    stored (online) vector, for every ticker."""
    from features.engine import compute_features_incremental

    version = served.feature_set_version
    for ticker in served.tickers:
        stored = get_online_features(ticker=ticker, version=version.pk)
        window = engine_window(version=version, ticker=ticker, feature_date=stored.date)
        frame = compute_features_incremental(window.bars, stored.date, market_returns=window.market,
                                             fundamentals=window.fundamentals, sentiment=window.sentiment,
                                             params=window.spec, dtype=np.float32)
        recomputed = frame[window.columns].to_numpy(dtype=np.float64)[-1]
        np.testing.assert_array_equal(recomputed, stored.as_array(), err_msg=ticker)


def test_a_social_feature_set_gets_the_posts_known_at_the_bar_time(served):
    """default_social: the window holds the posts as the build does (the stored row recomputes
    exactly), and the partial row counts the session's posts up to the bar's time only."""
    from features.engine import compute_features_incremental
    from features.intraday import TodayBar, intraday_features
    from features.models import SocialPost
    from features.selectors import resolve_feature_set_version
    from features.services.feature_store import build_features

    aapl = Ticker.objects.get(symbol="AAPL")
    times = [datetime(2018, 5, 17, 11, 0, tzinfo=NY), datetime(2018, 5, 18, 15, 0, tzinfo=NY),
             datetime(2018, 5, 18, 17, 30, tzinfo=NY),  # after Friday's close: Monday's
             datetime(2018, 5, 21, 10, 0, tzinfo=NY), datetime(2018, 5, 21, 10, 45, tzinfo=NY)]
    for i, moment in enumerate(times):
        SocialPost.objects.create(ticker=aapl, source="stocktwits", post_key=f"p{i}", posted_at=moment,
                                  text=f"$AAPL post {i}", sentiment=0.5 if i % 2 else -0.4,
                                  author_label="bullish" if i % 2 else "")
    build_features(feature_set="default_social", tickers=["AAPL"])
    version = resolve_feature_set_version(version=None, feature_set="default_social")
    stored = get_online_features(ticker="AAPL", version=version.pk)
    assert stored.date == FRIDAY
    window = engine_window(version=version, ticker="AAPL", feature_date=FRIDAY)
    frame = compute_features_incremental(window.bars, FRIDAY, market_returns=window.market,
                                         fundamentals=window.fundamentals, sentiment=window.sentiment,
                                         social=window.social, params=window.spec, dtype=np.float32)
    np.testing.assert_array_equal(frame[window.columns].to_numpy(dtype=np.float64)[-1], stored.as_array())
    assert stored.as_dict()["social_count_1"] == 1.0  # Friday 15:00; 17:30 counts for Monday

    close = last_bar("AAPL").close
    bar = TodayBar("AAPL", SESSION, close, close * 1.01, close * 0.99, close * 1.005, 1e6,
                   QUOTE_TIME.astimezone(UTC), "push")  # 10:30: the 10:45 post is not known yet
    row = dict(zip(window.columns, intraday_features(window, bar), strict=True))
    assert row["social_count_1"] == 2.0  # Friday 17:30 and Monday 10:00
    assert row["social_count_5"] == 4.0


# --------------------------------------------------------------------------------------------------
# POST /quotes: checks, permissions, merging


def test_quotes_are_checked_and_every_bad_field_is_named(served, clock):
    staff = api(make_token(staff=True))
    close = last_bar("AAPL").close
    good = {"ticker": "AAPL", "price": close, "time": "2018-05-21T10:00:00-04:00"}
    bad = [
        good,
        {"ticker": "ZZZZ", "price": 10.0, "time": "2018-05-21T10:00:00Z"},
        {"ticker": "MSFT", "price": -1, "time": "2018-05-21T10:00:00Z"},
        {"ticker": "JPM", "price": 10.0},
        {"ticker": "XOM", "price": 10.0, "time": "2018-05-21T10:00:00"},
        {"ticker": "XOM", "price": 10.0, "time": "2018-05-19T10:00:00-04:00"},
        {"ticker": "XOM", "price": 10.0, "time": "2018-05-18T15:00:00-04:00"},
        {"ticker": "MSFT", "price": 10.0, "open": 10.0, "time": "2018-05-21T10:00:00Z"},
        {"ticker": "MSFT", "open": 10.0, "high": 9.0, "low": 9.5, "close": 9.8, "volume": 1, "time": "2018-05-21T14:00:00Z"},
        {"ticker": "MSFT", "price": "10", "time": "2018-05-21T14:00:00Z"},
        {"ticker": "MSFT", "price": 10.0, "volume": float("inf"), "time": "2018-05-21T14:00:00Z"},
        {"ticker": "MSFT", "price": 10.0, "time": "2999-01-04T14:00:00Z"},
        {"ticker": "MSFT", "price": 10.0, "time": "2018-05-21T14:00:00Z", "size": 3},
        "AAPL",
        {"ticker": "AA\u0000PL", "price": 10.0, "time": "2018-05-21T14:00:00Z"},  # a NUL: PostgreSQL refuses it
    ]
    raw = json.dumps({"quotes": bad})  # Infinity as JavaScript writes it
    response = staff.post("/quotes", raw, content_type="application/json")
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert "ZZZZ" in errors["quotes[1].ticker"][0] and "unknown ticker" in errors["quotes[1].ticker"][0]
    assert errors["quotes[2].price"] == ["MSFT: must be > 0 and <= 1e+12, got -1"]
    assert errors["quotes[3].time"] == ["JPM: This field is required."]
    assert "has no UTC offset" in errors["quotes[4].time"][0] and errors["quotes[4].time"][0].startswith("XOM: ")
    assert "2018-05-19 (New York) is not a trading day" in errors["quotes[5].time"][0]
    assert "closed and stored (last bar 2018-05-18)" in errors["quotes[6].time"][0]
    assert "not both" in errors["quotes[7]"][0]
    assert "high 9 is below open, low or close" in errors["quotes[8].high"][0]
    assert "got a string ('10')" in errors["quotes[9].price"][0]
    assert "got Infinity" in errors["quotes[10].volume"][0]
    assert "is in the future" in errors["quotes[11].time"][0]
    assert "unknown field(s) size" in errors["quotes[12]"][0]
    assert "expected an object" in errors["quotes[13]"][0]
    assert "is not a ticker symbol" in errors["quotes[14].ticker"][0]
    assert "quotes[0]" not in json.dumps(errors)  # the good one is fine...
    assert today_bars(tickers=["AAPL", "MSFT"]) == {}  # ...and not stored either: all or nothing
    assert staff.post("/quotes", {"quotes": []}, format="json").status_code == 400
    assert staff.post("/quotes", [good], format="json").json()["errors"]["quotes"]
    with_limit = staff.post("/quotes", {"quotes": [good] * 1001}, format="json")
    assert with_limit.status_code == 413 and "ML_MAX_BATCH_SIZE" in with_limit.json()["detail"]
    response = staff.post("/quotes", {"quotes": [good]}, format="json")
    assert response.status_code == 200 and response.json()["accepted"] == 1


def test_quotes_need_staff_and_the_price_data_permission(served, clock):
    body = {"quotes": [{"ticker": "AAPL", "price": 40.0, "time": "2018-05-21T10:00:00-04:00"}]}
    assert APIClient().post("/quotes", body, format="json").status_code == 401
    plain = api(token_of(staff=False, perms=("features.add_pricebar",)))
    assert plain.post("/quotes", body, format="json").status_code == 403  # the permission without staff
    bare_staff = api(token_of(staff=True))
    response = bare_staff.post("/quotes", body, format="json")
    assert response.status_code == 403 and "features.add_pricebar" in response.json()["detail"]
    assert today_bars(tickers=["AAPL"]) == {}
    allowed = api(token_of(staff=True, perms=("features.add_pricebar",)))
    assert allowed.post("/quotes", body, format="json").status_code == 200
    assert today_bars(tickers=["AAPL"])["AAPL"].close == 40.0


def test_a_bar_replaces_an_older_one_and_trades_extend_it(served, clock):
    staff = api(make_token(staff=True))

    def push(*quotes):
        response = staff.post("/quotes", {"quotes": list(quotes)}, format="json")
        assert response.status_code == 200, response.content
        return response.json()["bars"][0]

    bar = push({"ticker": "XOM", "open": 80.0, "high": 81.0, "low": 79.5, "close": 80.5, "volume": 10_000,
                "time": "2018-05-21T10:00:00-04:00"})
    assert (bar["open"], bar["high"], bar["low"], bar["close"], bar["volume"]) == (80.0, 81.0, 79.5, 80.5, 10_000)
    older = push({"ticker": "XOM", "open": 80.0, "high": 80.2, "low": 79.9, "close": 80.1, "volume": 5_000,
                  "time": "2018-05-21T09:50:00-04:00"})
    assert older == bar  # an older snapshot changes nothing
    traded = push({"ticker": "XOM", "price": 82.0, "volume": 300, "time": "2018-05-21T10:01:00-04:00"})
    assert (traded["high"], traded["close"], traded["volume"]) == (82.0, 82.0, 10_300)
    assert traded["time"] == "2018-05-21T14:01:00Z" and traded["source"] == "push"


def test_a_quote_far_from_the_last_close_is_refused_when_pushed_and_skipped_when_polled(served, clock, polygon,
                                                                                         settings):
    staff = api(make_token(staff=True))
    close = last_bar("AAPL").close
    at = "2018-05-21T10:00:00-04:00"
    tick = staff.post("/quotes", {"quotes": [{"ticker": "AAPL", "price": round(close * 3.67, 2), "time": at}]},
                      format="json")
    assert tick.status_code == 400
    message = tick.json()["errors"]["quotes[0].price"][0]
    assert message.startswith("AAPL: ") and "+267% from the last stored close" in message
    assert "ML_INTRADAY_MAX_MOVE=1" in message
    bar = {"ticker": "AAPL", "open": close, "high": close, "low": close * 0.4, "close": close * 0.45,
           "volume": 1_000, "time": at}
    errors = staff.post("/quotes", {"quotes": [bar]}, format="json").json()["errors"]
    assert set(errors) == {"quotes[0].low", "quotes[0].close"}  # each price named; open and high are fine
    assert today_bars(tickers=["AAPL"]) == {}
    halved = {"ticker": "AAPL", "price": round(close * 0.55, 2), "time": at}  # -45%: within half to double
    assert staff.post("/quotes", {"quotes": [halved]}, format="json").status_code == 200
    settings.ML_INTRADAY_MAX_MOVE = 0  # the check off
    assert staff.post("/quotes", {"quotes": [{**halved, "price": close * 3.67}]}, format="json").status_code == 200

    settings.ML_INTRADAY_MAX_MOVE = 1.0
    polygon.polygon_snapshots["JPM"] = snapshot_of("JPM", move=2.5, at=QUOTE_TIME)
    result = call_command_json("poll_quotes", "--tickers", "JPM")
    assert result["stored"] == 0 and result["skipped"] == {"implausible_move": 1}
    assert today_bars(tickers=["JPM"]) == {}


def call_command_json(*args: str) -> dict:
    out = io.StringIO()
    call_command(*args, "--json", stdout=out)
    return json.loads(out.getvalue().splitlines()[-1])


def test_the_poll_task_is_off_by_default_and_polls_only_in_market_hours(served, polygon, settings):
    from inference.quotes import quotes_poll

    polygon.polygon_snapshots["AAPL"] = snapshot_of("AAPL", move=0.01, at=QUOTE_TIME)
    assert quotes_poll(now=QUOTE_TIME)["status"] == "skipped"  # ML_INTRADAY_POLL_ENABLED is off
    settings.ML_INTRADAY_POLL_ENABLED = True
    settings.ML_INTRADAY_POLL_TICKERS = ["AAPL", "JPM"]
    assert "outside" in quotes_poll(now=datetime(2018, 5, 21, 8, 0, tzinfo=NY))["reason"]
    assert "outside" in quotes_poll(now=datetime(2018, 5, 19, 11, 0, tzinfo=NY))["reason"]  # a Saturday
    assert polygon.count(provider="polygon") == 0
    result = quotes_poll(now=QUOTE_TIME + timedelta(minutes=1))
    assert result["status"] == "ok" and result["requested"] == 2 and result["received"] == 1
    assert result["stored"] == 1 and result["calls"] == 1
    request = polygon.requests[-1]
    assert request.params["tickers"] == "AAPL,JPM" and request.headers["Authorization"] == f"Bearer {KEY}"
    # a last trade of a session already stored (Friday's, before Monday's first trade) is not a bar
    polygon.polygon_snapshots["JPM"] = snapshot_of("JPM", move=0.0, at=datetime(2018, 5, 18, 15, 59, tzinfo=NY))
    assert quotes_poll(now=QUOTE_TIME + timedelta(minutes=2))["skipped"] == {"session_closed": 1}
    assert set(today_bars(tickers=["AAPL", "JPM"])) == {"AAPL"}
    assert today_bars(tickers=["AAPL"])["AAPL"].time == QUOTE_TIME.astimezone(UTC)
