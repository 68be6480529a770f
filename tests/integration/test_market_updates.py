"""update_market_data through the Django layer, over real HTTP against the local fake provider server."""

from __future__ import annotations

import io
import json
import logging
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from features.models import CorporateAction, IngestionRun, PriceBar, Ticker
from features.providers import reset_limiters
from features.services import market_updates
from features.services.market_updates import update_market_data
from features.trading_calendar import last_completed_trading_day
from monitoring.models import CostRecord
from monitoring.selectors import cost_for_day, costs_by_category
from monitoring.services import record_cost
from tests.fakes.provider_server import FakeProviderServer, Reply, make_bars

pytestmark = pytest.mark.django_db

KEY = "TESTKEY-123456"
NY = ZoneInfo("America/New_York")
END = date(2024, 6, 28)  # a Friday: the fake data ends here
SATURDAY = datetime(2024, 6, 29, 12, 0, tzinfo=NY)  # the update runs the day after: as_of = END
MONDAY_EVENING = datetime(2024, 7, 1, 19, 0, tzinfo=NY)  # as_of = Monday 2024-07-01


@pytest.fixture(autouse=True)
def fresh_limiters(settings):
    settings.ML_MARKET_DATA_PROVIDER = ""
    reset_limiters()
    yield
    reset_limiters()


@pytest.fixture
def server():
    srv = FakeProviderServer(api_keys=(KEY,))
    yield srv
    srv.close()


@pytest.fixture
def configure(settings, monkeypatch, server):
    """Point provider ``name`` at the fake server with the given limits (pipeline config ``providers``)."""

    def apply(name: str = "alphavantage", **limits) -> None:
        values = {"requests_per_minute": 60_000, "requests_per_day": 0, "cost_per_call_usd": 0.0,
                  "timeout_seconds": 5, "max_retries": 3}
        values.update(limits)
        settings.PIPELINE_CONFIG = settings.PIPELINE_CONFIG.with_overrides({"providers": {name: values}})
        url = server.alphavantage_url if name == "alphavantage" else server.base_url
        monkeypatch.setenv(f"{name.upper()}_BASE_URL", url)
        monkeypatch.setenv(f"{name.upper()}_API_KEY", KEY)

    return apply


def add_symbols(server: FakeProviderServer, symbols, *, days: int = 30, end: date = END) -> None:
    for i, symbol in enumerate(symbols):
        server.add_symbol(symbol, make_bars(symbol, end=end, days=days, seed=i))


def extend(bars: pd.DataFrame, day: date, *, split: float = 1.0) -> pd.DataFrame:
    """Append one bar on ``day`` (a split of ``split`` on that day halves raw prices, AV-style)."""
    row = bars.iloc[[-1]].copy()
    row["date"] = pd.Timestamp(day)
    for column in ("open", "high", "low", "close"):
        row[column] = (row[column] * 1.01 / split).round(4)
    row["adj_close"] = row["close"]
    row["dividend_amount"], row["split_coefficient"] = 0.0, split
    out = bars.copy()
    if split != 1.0:  # the provider's adjusted close of every earlier day moves with the split
        out["adj_close"] = (out["adj_close"] / split).round(4)
    return pd.concat([out, row], ignore_index=True)


def api_calls(source: str = "alphavantage") -> int:
    return CostRecord.objects.filter(category="data_api", source=source).count()


# --- the calendar ---------------------------------------------------------------------------------------
def test_last_completed_trading_day_follows_the_nyse_calendar():
    assert last_completed_trading_day(now=SATURDAY) == END
    assert last_completed_trading_day(now=datetime(2024, 7, 1, 12, 0, tzinfo=NY)) == END  # Monday, market open
    assert last_completed_trading_day(now=MONDAY_EVENING) == date(2024, 7, 1)
    assert last_completed_trading_day(now=datetime(2024, 7, 5, 9, 0, tzinfo=NY)) == date(2024, 7, 3)  # July 4th


# --- the bars -------------------------------------------------------------------------------------
def test_update_of_100_tickers_is_rate_limited_retried_and_metered(server, configure):
    symbols = [f"T{i:03d}" for i in range(100)]
    add_symbols(server, symbols[:-1])  # T099: unknown to the provider
    server.script("T010", Reply.error(503))  # one 503, then the normal answer
    server.script("T020", Reply.error(404))
    rpm = 3000  # 50 requests per second
    configure(requests_per_minute=rpm, cost_per_call_usd=0.001)

    summary = update_market_data(provider="alphavantage", tickers=symbols, now=SATURDAY)

    # 100 tickers + 1 retry, no more, at no more than the configured rate (measured at the server)
    assert len(server.requests) == 101 and summary.calls == 101
    stamps = sorted(r.at for r in server.requests)
    interval = 60.0 / rpm
    assert stamps[-1] - stamps[0] >= 100 * interval * 0.9
    busiest = max(sum(1 for t in stamps if s <= t < s + 1.0) for s in stamps)
    assert busiest <= rpm / 60 + 2
    # the 503 was retried and succeeded; the 404 and the unknown ticker are reported by name
    assert server.count("T010") == 2 and "T010" not in summary.failed
    assert set(summary.failed) == {"T020", "T099"}
    assert summary.failed_reasons == {"T020": "not_found", "T099": "not_found"}
    assert "T020" in summary.failed["T020"] and "HTTP 404" in summary.failed["T020"]
    assert summary.tickers_updated == 98 and summary.rows_added == 98 * 30
    assert PriceBar.objects.count() == 98 * 30
    assert PriceBar.objects.filter(ticker__symbol="T010").count() == 30
    # every request is a cost record: provider, endpoint, bytes, cost
    records = CostRecord.objects.filter(category="data_api", source="alphavantage")
    assert records.count() == 101
    assert set(records.values_list("detail", flat=True)) == {"TIME_SERIES_DAILY_ADJUSTED"}
    assert records.filter(bytes=0).count() == 0
    assert cost_for_day(day=timezone.localdate()) == Decimal("0.101")
    assert costs_by_category(day=timezone.localdate())["data_api"] == Decimal("0.101")
    assert summary.cost_usd == pytest.approx(0.101)
    # one ingestion run with the failures; the key appears nowhere
    run = IngestionRun.objects.get(id=summary.ingestion_run)
    assert (run.kind, run.source, run.status, run.rows_loaded) == ("prices", "alphavantage", "succeeded", 98 * 30)
    assert "T020 (not_found)" in run.error and "T099 (not_found)" in run.error
    assert KEY not in json.dumps(summary.as_dict()) and KEY not in run.error


def test_second_update_the_same_day_costs_no_call_beyond_the_freshness_check(server, configure):
    symbols = ["AAPL", "MSFT", "IBM", "KO", "XOM"]
    add_symbols(server, symbols, days=150)
    configure(cost_per_call_usd=0.01)

    first = update_market_data(provider="alphavantage", tickers=symbols, now=SATURDAY)
    assert (first.calls, first.rows_added, first.tickers_updated) == (5, 750, 5)
    assert {r.params["outputsize"] for r in server.requests} == {"full"}  # no history yet

    # Same day: every ticker already has the last completed trading day: no request at all.
    again = update_market_data(provider="alphavantage", tickers=symbols, now=SATURDAY)
    assert (again.calls, again.rows_added, again.tickers_fresh, again.cost_usd) == (0, 0, 5, 0.0)
    assert api_calls() == 5 and len(server.requests) == 5

    # Monday evening, before the provider has Monday's bar: one freshness check, nothing else.
    lagging = update_market_data(provider="alphavantage", tickers=symbols, now=MONDAY_EVENING)
    assert (lagging.calls, lagging.rows_added, lagging.tickers_fresh) == (1, 0, 5)
    assert api_calls() == 6 and lagging.cost_usd == pytest.approx(0.01)
    probe = server.requests[-1]
    assert probe.params["outputsize"] == "compact"  # incremental: only the latest 100 points

    # The provider publishes Monday: the check finds it and the others are fetched too.
    for symbol in symbols:
        server.add_symbol(symbol, extend(server.data[symbol], date(2024, 7, 1)))
    published = update_market_data(provider="alphavantage", tickers=symbols, now=MONDAY_EVENING)
    assert (published.calls, published.rows_added, published.tickers_updated) == (5, 5, 5)
    assert published.history_rescaled == []
    assert PriceBar.objects.filter(date=date(2024, 7, 1)).count() == 5
    assert update_market_data(provider="alphavantage", tickers=symbols, now=MONDAY_EVENING).calls == 0


def test_budget_exceeded_stops_with_the_spec_message(server, configure, settings, caplog):
    symbols = [f"B{i}" for i in range(6)]
    add_symbols(server, symbols)
    configure(cost_per_call_usd=0.01)
    settings.ML_DAILY_COST_LIMIT_USD = 0.05
    record_cost(day=timezone.localdate(), category="compute", source="training", detail="run 1", units=60,
                unit="cpu_second", cost_usd=0.02)  # other categories count against the same limit

    with caplog.at_level(logging.WARNING):
        summary = update_market_data(provider="alphavantage", tickers=symbols, now=SATURDAY)

    message = "Daily cost limit exceeded: $0.06 > $0.05"
    assert summary.warning == message and summary.budget_exceeded
    assert any(r.levelno == logging.WARNING and r.getMessage() == message for r in caplog.records)
    assert summary.calls == 3 and api_calls() == 3 and len(server.requests) == 3
    assert summary.skipped == ["B3", "B4", "B5"] and summary.failed == {}
    assert summary.tickers_updated == 3 and PriceBar.objects.values("ticker").distinct().count() == 3
    assert cost_for_day(day=timezone.localdate()) == Decimal("0.05")
    run = IngestionRun.objects.get(id=summary.ingestion_run)
    assert message in run.error

    # A later run the same day makes no request at all.
    again = update_market_data(provider="alphavantage", tickers=symbols, now=SATURDAY)
    assert again.warning == message and again.calls == 0 and len(server.requests) == 3
    assert again.skipped == ["B3", "B4", "B5"]


def test_daily_request_limit_holds_across_runs(server, configure):
    symbols = ["AAPL", "MSFT", "IBM", "KO", "XOM"]
    add_symbols(server, symbols)
    configure(requests_per_day=3)
    first = update_market_data(provider="alphavantage", tickers=symbols, now=SATURDAY)
    assert first.calls == 3 and first.skipped == ["KO", "XOM"]
    assert first.warning == "alphavantage: daily request limit reached (3/day)"
    reset_limiters()  # a new process: the count comes from today's cost records
    second = update_market_data(provider="alphavantage", tickers=symbols, now=SATURDAY)
    assert second.calls == 0 and len(server.requests) == 3
    assert sorted(second.skipped) == ["KO", "XOM"] and second.tickers_fresh == 3


def test_split_in_the_new_bars_rescales_the_stored_history(server, configure):
    add_symbols(server, ["AAPL"], days=150)
    configure()
    update_market_data(provider="alphavantage", tickers=["AAPL"], now=SATURDAY)
    old = PriceBar.objects.get(ticker__symbol="AAPL", date=date(2024, 6, 3))

    bars = extend(server.data["AAPL"], date(2024, 7, 1), split=2.0)  # 2:1 split on Monday
    server.add_symbol("AAPL", bars)
    summary = update_market_data(provider="alphavantage", tickers=["AAPL"], now=MONDAY_EVENING)

    assert summary.rows_added == 1 and summary.history_rescaled == ["AAPL"]
    new = PriceBar.objects.get(ticker__symbol="AAPL", date=date(2024, 6, 3))
    assert new.close == pytest.approx(old.close / 2) and new.open == pytest.approx(old.open / 2)
    assert new.volume == old.volume * 2
    served = bars.set_index("date").loc[pd.Timestamp("2024-06-03")]
    assert new.adj_close == pytest.approx(served["adj_close"], rel=1e-4)
    last = PriceBar.objects.get(ticker__symbol="AAPL", date=END)  # the re-fetched bar: split-adjusted too
    assert last.close == pytest.approx(round(server.data["AAPL"].iloc[-2]["close"], 4) / 2)
    assert CorporateAction.objects.filter(ticker__symbol="AAPL", kind="split", value=2.0).count() == 1
    # nothing is applied twice
    assert update_market_data(provider="alphavantage", tickers=["AAPL"], now=MONDAY_EVENING).calls == 0
    assert PriceBar.objects.get(ticker__symbol="AAPL", date=date(2024, 6, 3)).close == pytest.approx(old.close / 2)


@pytest.mark.parametrize("name", ["tiingo", "stooq"])
def test_other_http_providers(server, configure, name):
    add_symbols(server, ["AAPL", "MSFT"], days=20)
    configure(name, cost_per_call_usd=0.002)
    summary = update_market_data(provider=name, tickers=["AAPL", "MSFT", "NOPE"], now=SATURDAY)
    assert summary.rows_added == 40 and set(summary.failed) == {"NOPE"}
    assert summary.failed_reasons["NOPE"] == "not_found"
    assert api_calls(name) == 3 == summary.calls
    assert update_market_data(provider=name, tickers=["AAPL", "MSFT"], now=SATURDAY).calls == 0


# --- the command ------------------------------------------------------------------------------------------
def test_update_market_data_command_json(server, configure):
    add_symbols(server, ["AAPL", "MSFT"], days=20)
    configure(cost_per_call_usd=0.0025)
    out, err = io.StringIO(), io.StringIO()
    call_command("update_market_data", "--provider", "alphavantage", "--tickers", "AAPL,msft,NOPE", "--json",
                 stdout=out, stderr=err)
    lines = out.getvalue().strip().splitlines()
    result = json.loads(lines[-1])
    assert {"tickers_updated", "rows_added", "failed", "calls", "cost_usd"} <= set(result)
    assert result["tickers_updated"] == 2 and result["rows_added"] == 40
    assert set(result["failed"]) == {"NOPE"} and result["failed"]["NOPE"].startswith("not_found")
    assert result["calls"] == 3 and result["cost_usd"] == pytest.approx(0.0075)
    assert lines[0].startswith("alphavantage: 2 of 3 tickers updated")
    assert KEY not in out.getvalue() and KEY not in err.getvalue()


def test_update_market_data_command_errors(monkeypatch):
    monkeypatch.delenv("ALPHAVANTAGE_API_KEY", raising=False)
    with pytest.raises(CommandError, match="ALPHAVANTAGE_API_KEY is not set"):
        call_command("update_market_data", "--provider", "alphavantage", stdout=io.StringIO())
    with pytest.raises(CommandError, match="unknown provider 'yahoo'"):
        call_command("update_market_data", "--provider", "yahoo", stdout=io.StringIO())
    with pytest.raises(CommandError, match="--news: files has no news endpoint"):
        call_command("update_market_data", "--news", stdout=io.StringIO())


def test_files_provider_loads_the_sample_into_a_fresh_database(settings):
    out = io.StringIO()
    call_command("update_market_data", "--json", stdout=out, stderr=io.StringIO())
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    assert result["provider"] == "files"
    assert (result["tickers_updated"], result["rows_added"], result["calls"], result["cost_usd"]) == (50, 62_950, 0, 0)
    assert result["failed"] == {} and PriceBar.objects.count() == 62_950
    assert Ticker.objects.filter(active=True).count() == 50
    assert IngestionRun.objects.get(id=result["ingestion_run"]).source == "files"
    again = update_market_data(tickers=None)
    assert (again.rows_added, again.tickers_updated, again.calls) == (0, 0, 0)
    assert CostRecord.objects.count() == 0


def test_files_provider_reports_a_missing_ticker(tmp_path, settings):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "AAA.csv").write_text("date,open,high,low,close,adj_close,volume\n"
                                  "2021-03-01,10,11,9,10.5,10.4,1000\n2021-03-02,10.5,12,10,11,10.9,2000\n"
                                  "2021-03-03,10.5,9,10,11,10.9,2000\n")
    summary = update_market_data(provider=f"files:{drop}", tickers=["AAA", "BBB"])
    assert summary.rows_added == 2 and summary.rejected_by_reason == {"high_below_low": 1}
    assert summary.failed_reasons == {"BBB": "not_found"}
    (drop / "AAA.csv").write_text((drop / "AAA.csv").read_text() + "2021-03-04,11,12,10,11.5,11.4,1500\n")
    assert update_market_data(provider=f"files:{drop}", tickers=["AAA"]).rows_added == 1
    assert PriceBar.objects.filter(ticker__symbol="AAA").count() == 3


# --- Polygon: the whole market in one request per day --------------------------------------------------
def polygon_market(server: FakeProviderServer, symbols: list[str], days: list[date], *, seed: int = 0) -> None:
    """``symbols`` x ``days`` of bars as Polygon serves them (split-adjusted)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, symbol in enumerate(symbols):
        price = 20.0 + (i % 200)
        for day in days:
            price *= 1 + rng.normal(0, 0.01)
            rows.append({"ticker": symbol, "date": pd.Timestamp(day), "open": round(price * 0.999, 4),
                         "high": round(price * 1.01, 4), "low": round(price * 0.99, 4), "close": round(price, 4),
                         "volume": float(rng.integers(10_000, 1_000_000))})
    parts = [server.polygon_bars, pd.DataFrame(rows)] if len(server.polygon_bars) else [pd.DataFrame(rows)]
    server.polygon_bars = pd.concat(parts, ignore_index=True)


def test_polygon_updates_1500_tickers_with_a_handful_of_requests(server, configure, monkeypatch):
    symbols = [f"S{i:04d}" for i in range(1500)]
    Ticker.objects.bulk_create([Ticker(symbol=s, active=True) for s in symbols])
    polygon_market(server, [*symbols, "NOTMINE"], [date(2024, 6, 27), END])
    configure("polygon", cost_per_call_usd=0.001, requests_per_minute=120)  # a request every 0.5 s
    first = update_market_data(provider="polygon", now=SATURDAY)
    assert first.rows_added == 1500 and first.tickers_updated == 1500 and first.calls == 3
    # the 2nd and 3rd requests waited for their slots (about 1 s, less the requests' own time; half
    # of that is margin for a slow machine); the summary says how long, within the run's time
    assert 0.5 <= first.rate_limit_wait_seconds < first.seconds
    assert not PriceBar.objects.filter(ticker__symbol="NOTMINE").exists()  # only the universe is stored

    polygon_market(server, symbols, [date(2024, 7, 1)], seed=1)
    monkeypatch.setattr(market_updates.timezone, "now", lambda: MONDAY_EVENING)  # the command runs "now"
    out = io.StringIO()
    call_command("update_market_data", "--provider", "polygon", "--json", stdout=out, stderr=io.StringIO())
    second = json.loads(out.getvalue().strip().splitlines()[-1])
    assert second["rows_added"] == 1500 and second["calls"] <= 5 and second["tickers_updated"] == 1500
    assert 0 < second["rate_limit_wait_seconds"] < second["seconds"]
    assert [r.path for r in server.requests[-second["calls"]:]] == [
        "/v3/reference/splits", "/v3/reference/dividends", "/v2/aggs/grouped/locale/us/market/stocks/2024-07-01"]
    again = update_market_data(provider="polygon", now=MONDAY_EVENING)
    assert again.calls == 0 and again.rows_added == 0 and again.tickers_fresh == 1500
    assert api_calls("polygon") == first.calls + second["calls"] == 6
    assert KEY not in out.getvalue()
    assert all(r.headers.get("Authorization") == f"Bearer {KEY}" and "apiKey" not in r.params
               for r in server.requests)


def test_polygon_fills_a_gap_day_by_day_and_applies_splits_and_dividends(server, configure):
    symbols = ["AAPL", "MSFT", "XOM"]
    Ticker.objects.bulk_create([Ticker(symbol=s, active=True) for s in symbols])
    history = [d.date() for d in pd.bdate_range("2024-06-17", "2024-06-26")]
    polygon_market(server, symbols, history)
    configure("polygon")
    update_market_data(provider="polygon", now=datetime(2024, 6, 26, 19, 0, tzinfo=NY))
    # a lagging run fetched one day only (no history yet): backfill the rest like a per-ticker provider would
    assert PriceBar.objects.count() == 3
    update_market_data(provider="polygon", tickers=symbols, now=datetime(2024, 6, 26, 19, 0, tzinfo=NY))
    stored_jun26 = {s: PriceBar.objects.get(ticker__symbol=s, date=date(2024, 6, 26)) for s in symbols}

    # three days later: AAPL split 2:1 on Jul 1 and MSFT went ex a $1.00 dividend on Jun 28
    gap = [date(2024, 6, 27), END, date(2024, 7, 1)]
    polygon_market(server, symbols, gap, seed=2)
    bars = server.polygon_bars
    before_split = (bars["ticker"] == "AAPL") & (bars["date"] < pd.Timestamp("2024-07-01"))
    for column in ("open", "high", "low", "close"):  # Polygon serves the earlier days on the new scale
        bars.loc[before_split, column] = (bars.loc[before_split, column] / 2).round(4)
    bars.loc[before_split, "volume"] *= 2
    server.polygon_splits = [{"ticker": "AAPL", "execution_date": "2024-07-01", "split_from": 1, "split_to": 2,
                              "id": "E1"}]
    server.polygon_dividends = [
        {"ticker": "MSFT", "ex_dividend_date": "2024-06-28", "cash_amount": 1.0, "dividend_type": "CD",
         "frequency": 4, "currency": "USD"},
        {"ticker": "ZZZZ", "ex_dividend_date": "2024-06-28", "cash_amount": 0.5},  # not in the universe
    ] + [{"ticker": f"Q{i}", "ex_dividend_date": "2024-06-27", "cash_amount": 0.1} for i in range(5)]
    server.polygon_page_size = 2  # four pages of dividends, followed through next_url
    summary = update_market_data(provider="polygon", now=MONDAY_EVENING)
    assert summary.rows_added == 9 and summary.calls == 1 + 4 + 3
    assert sorted(summary.history_rescaled) == ["AAPL", "MSFT"]

    aapl = PriceBar.objects.get(ticker__symbol="AAPL", date=date(2024, 6, 26))
    assert aapl.close == pytest.approx(stored_jun26["AAPL"].close / 2)
    assert aapl.volume == stored_jun26["AAPL"].volume * 2
    assert aapl.adj_close == pytest.approx(stored_jun26["AAPL"].adj_close / 2)
    served = bars[(bars["ticker"] == "AAPL") & (bars["date"] == pd.Timestamp("2024-07-01"))].iloc[0]
    assert PriceBar.objects.get(ticker__symbol="AAPL", date=date(2024, 7, 1)).close == pytest.approx(served["close"])
    assert CorporateAction.objects.get(ticker__symbol="AAPL", kind="split").value == 2.0

    # MSFT's adjusted closes: Yahoo's multiplier (1 - D / previous close) over the ex-date, and the last
    # adjusted close is the close
    msft = {b.date: b for b in PriceBar.objects.filter(ticker__symbol="MSFT")}
    jun27, jun28, jul1 = msft[date(2024, 6, 27)], msft[END], msft[date(2024, 7, 1)]
    assert jul1.adj_close == pytest.approx(jul1.close)
    assert jun28.adj_close / jun27.adj_close == pytest.approx(jun28.close / (jun27.close - 1.0))
    factor = 1 - 1.0 / jun27.close
    assert msft[date(2024, 6, 26)].adj_close == pytest.approx(stored_jun26["MSFT"].adj_close * factor)
    assert CorporateAction.objects.get(ticker__symbol="MSFT", kind="dividend").value == 1.0
    xom = PriceBar.objects.get(ticker__symbol="XOM", date=date(2024, 6, 26))
    assert xom.adj_close == pytest.approx(stored_jun26["XOM"].adj_close)  # no action: untouched
    # nothing is applied twice
    assert update_market_data(provider="polygon", now=MONDAY_EVENING).calls == 0
    assert PriceBar.objects.get(ticker__symbol="AAPL", date=date(2024, 6, 26)).close == pytest.approx(aapl.close)


def test_polygon_bad_key_and_per_ticker_backfill(server, configure, monkeypatch):
    Ticker.objects.create(symbol="AAPL", active=True)
    polygon_market(server, ["AAPL"], [d.date() for d in pd.bdate_range("2024-06-03", END)])
    server.polygon_dividends = [{"ticker": "AAPL", "ex_dividend_date": "2024-06-10", "cash_amount": 0.25}]
    configure("polygon")
    monkeypatch.setenv("POLYGON_API_KEY", "WRONG-KEY-999")
    summary = update_market_data(provider="polygon", now=SATURDAY)
    assert summary.rows_added == 0 and "auth" in summary.warning and "WRONG-KEY-999" not in summary.warning
    assert summary.calls == 1  # an auth error is not retried

    monkeypatch.setenv("POLYGON_API_KEY", KEY)
    from features.services.provider_config import build_provider

    provider = build_provider(name="polygon", today=END)
    frame = provider.fetch_daily("AAPL", since=None)
    assert len(frame) == 20 and frame["dividend_amount"].sum() == pytest.approx(0.25)
    ex = frame.index[frame["date"] == pd.Timestamp("2024-06-10")][0]
    ratio = frame["adj_close"][ex] / frame["adj_close"][ex - 1]
    assert ratio == pytest.approx(frame["close"][ex] / (frame["close"][ex - 1] - 0.25))
    assert frame["adj_close"].iloc[-1] == frame["close"].iloc[-1]


def test_polygon_refuses_an_unreadable_corporate_action_and_stores_nothing(server, configure):
    Ticker.objects.create(symbol="AAPL", active=True)
    polygon_market(server, ["AAPL"], [END])
    server.polygon_splits = [{"ticker": "AAPL", "execution_date": "2024-06-28", "split_from": 1, "split_to": 0}]
    configure("polygon")
    summary = update_market_data(provider="polygon", now=SATURDAY)
    assert "bad_response" in summary.warning and "splits: 1 unreadable rows" in summary.warning
    assert summary.rows_added == 0 and not PriceBar.objects.exists() and summary.skipped == ["AAPL"]


def test_polygon_leaves_a_ticker_far_behind_to_a_backfill(server, configure):
    """A delisted ticker's old last bar must not make every daily update fetch each day since."""
    Ticker.objects.bulk_create([Ticker(symbol=s, active=True) for s in ("AAPL", "GONE")])
    polygon_market(server, ["GONE"], [date(2024, 3, 1)])
    polygon_market(server, ["AAPL"], [date(2024, 6, 27), END])
    configure("polygon")
    update_market_data(provider="polygon", tickers=["GONE"], now=datetime(2024, 3, 1, 19, 0, tzinfo=NY))
    update_market_data(provider="polygon", tickers=["AAPL"], now=datetime(2024, 6, 27, 19, 0, tzinfo=NY))
    calls = len(server.requests)
    summary = update_market_data(provider="polygon", now=SATURDAY)
    assert summary.rows_added == 1 and summary.skipped == ["GONE"]
    assert len(server.requests) - calls == 3  # splits, dividends, one grouped day: not one per day since March


def test_polygon_fills_a_gap_the_universe_shares_but_not_a_few_stragglers(server, configure):
    symbols = [f"S{i:02d}" for i in range(20)]
    Ticker.objects.bulk_create([Ticker(symbol=s, active=True) for s in symbols])
    polygon_market(server, symbols, [date(2024, 6, 10), date(2024, 6, 14)])
    configure("polygon")
    update_market_data(provider="polygon", tickers=symbols[:1], now=datetime(2024, 6, 10, 19, 0, tzinfo=NY))  # lags
    update_market_data(provider="polygon", tickers=symbols[1:], now=datetime(2024, 6, 14, 19, 0, tzinfo=NY))
    polygon_market(server, symbols, [date(2024, 6, 17), date(2024, 6, 18), date(2024, 6, 20), date(2024, 6, 21),
                                     date(2024, 6, 24), date(2024, 6, 25), date(2024, 6, 26), date(2024, 6, 27), END],
                   seed=3)
    calls = len(server.requests)
    summary = update_market_data(provider="polygon", now=SATURDAY)  # 9 trading days behind, all 19 of them
    assert summary.skipped == ["S00"] and summary.rows_added == 19 * 9
    assert len(server.requests) - calls == 2 + 9  # the shared gap day by day, not from the straggler's June 10
