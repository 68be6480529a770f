"""Provider adapters over real HTTP against the local fake server (no internet)."""

from __future__ import annotations

import logging
import socket
import time
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from features.providers import (
    AlphaVantageProvider,
    AuthError,
    BudgetExceededError,
    CallRecord,
    DailyBudget,
    DailyLimitReached,
    FileDropProvider,
    NotFoundError,
    ProviderConfig,
    RateLimitedError,
    RateLimiter,
    ServerError,
    StooqProvider,
    TiingoProvider,
    budget_message,
    get_provider,
    redact,
    update_prices,
)
from features.providers.base import PRICE_COLUMNS, ProviderTimeoutError
from features.providers.http import parse_retry_after
from tests.fakes.provider_server import FakeProviderServer, Reply, make_bars, news_item

KEY = "TESTKEY-123456"
TODAY = date(2024, 6, 28)  # a Friday; the fake data ends here
PROVIDER_TODAY = date(2024, 7, 1)  # the Monday after: the day the update runs
AV_COLUMNS = PRICE_COLUMNS + ["dividend_amount", "split_coefficient"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.day = date(2024, 1, 2)
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def today(self) -> date:
        return self.day


@pytest.fixture
def server():
    srv = FakeProviderServer(api_keys=(KEY,))
    for i, sym in enumerate(("AAPL", "MSFT", "IBM")):
        srv.add_symbol(sym, make_bars(sym, end=TODAY, days=300, seed=i))
    yield srv
    srv.close()


def config(server: FakeProviderServer, name: str, **overrides) -> ProviderConfig:
    base = server.alphavantage_url if name == "alphavantage" else server.base_url
    values = dict(base_url=base, api_key=KEY, requests_per_minute=60_000, requests_per_day=None,
                  cost_per_call_usd=0.0, timeout_seconds=5.0, max_retries=3, backoff_base_seconds=0.01,
                  backoff_max_seconds=0.05, name=name)
    values.update(overrides)
    return ProviderConfig(**values)


def make(cls, server, *, records=None, sleeps=None, limiter=None, **overrides):
    cfg = config(server, cls.name, **overrides)
    return cls(
        cfg,
        on_call=records.append if records is not None else None,
        limiter=limiter or RateLimiter(cfg.requests_per_minute, cfg.requests_per_day),
        sleep=(sleeps.append if sleeps is not None else time.sleep),
        today=lambda: PROVIDER_TODAY,
    )


# --- configuration and redaction --------------------------------------------------------------------
def test_config_from_env_reads_base_url_and_key(monkeypatch):
    monkeypatch.setenv("ALPHAVANTAGE_API_KEY", "SECRET-KEY-42")
    monkeypatch.delenv("ALPHAVANTAGE_BASE_URL", raising=False)
    cfg = ProviderConfig.from_env("alphavantage", {"requests_per_minute": 75, "cost_per_call_usd": 0.002})
    assert cfg.base_url == "https://www.alphavantage.co/query"
    assert cfg.api_key == "SECRET-KEY-42"
    assert cfg.requests_per_minute == 75 and cfg.cost_per_call_usd == 0.002
    assert "SECRET-KEY-42" not in repr(cfg)
    monkeypatch.setenv("TIINGO_BASE_URL", "http://127.0.0.1:9/")
    assert ProviderConfig.from_env("tiingo", {}).base_url == "http://127.0.0.1:9"
    assert isinstance(get_provider("stooq"), StooqProvider)


def test_redact_removes_key_values_and_key_params():
    url = "https://x/query?function=F&symbol=AAPL&apikey=ABCDEF123&token=zzz999"
    out = redact(url, ["ABCDEF123"])
    assert "ABCDEF123" not in out and "zzz999" not in out
    assert "symbol=AAPL" in out


def test_parse_retry_after_seconds_and_http_date():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Mon, 01 Jan 2024 12:00:10 GMT", now=now) == pytest.approx(10.0)


# --- rate limiter ----------------------------------------------------------------------------------
def test_rate_limiter_spaces_requests_on_fake_clock():
    clock = FakeClock()
    limiter = RateLimiter(60, None, clock=clock, sleep=clock.sleep, today=clock.today)
    for _ in range(5):
        limiter.acquire()
    assert clock.sleeps == pytest.approx([1.0, 1.0, 1.0, 1.0])
    clock.now += 10  # idle: the bucket refills only up to its burst (1)
    limiter.acquire()
    limiter.acquire()
    assert clock.sleeps[-1] == pytest.approx(1.0) and len(clock.sleeps) == 5


def test_rate_limiter_burst_and_daily_limit_without_sleeping():
    clock = FakeClock()
    limiter = RateLimiter(6, 3, burst=3, clock=clock, sleep=clock.sleep, today=clock.today)
    for _ in range(3):
        limiter.acquire()
    assert clock.sleeps == []  # a burst of 3 goes out at once
    with pytest.raises(DailyLimitReached):
        limiter.acquire()
    assert clock.sleeps == []  # no sleeping until tomorrow
    assert limiter.remaining_today() == 0
    clock.day += timedelta(days=1)
    assert limiter.remaining_today() == 3
    limiter.acquire()


def test_rate_limiter_real_time():
    limiter = RateLimiter(600, None)  # one request per 0.1 s
    started = time.monotonic()
    for _ in range(6):
        limiter.acquire()
    assert time.monotonic() - started >= 0.5 - 0.01


# --- Alpha Vantage ---------------------------------------------------------------------------------
def test_alphavantage_full_history_in_documented_format(server):
    records: list[CallRecord] = []
    provider = make(AlphaVantageProvider, server, records=records, cost_per_call_usd=0.002)
    frame = provider.fetch_daily("aapl", since=None)
    assert list(frame.columns) == AV_COLUMNS
    assert len(frame) == 300 and frame["date"].is_monotonic_increasing
    assert frame["date"].iloc[-1] == pd.Timestamp(TODAY)
    expected = server.data["AAPL"].iloc[-1]
    assert frame["close"].iloc[-1] == pytest.approx(expected["close"], abs=1e-4)
    assert frame["adj_close"].iloc[-1] == pytest.approx(expected["adj_close"], abs=1e-4)
    assert frame["dividend_amount"].sum() == pytest.approx(0.24)
    request = server.requests[-1]
    assert request.params["function"] == "TIME_SERIES_DAILY_ADJUSTED"
    assert request.params["outputsize"] == "full" and request.params["datatype"] == "json"
    assert records == [records[0]] and records[0].status == 200 and records[0].cost_usd == 0.002
    assert records[0].endpoint == "TIME_SERIES_DAILY_ADJUSTED" and records[0].bytes > 1000


def test_alphavantage_unadjusted_daily_for_free_keys(server):
    cfg = config(server, "alphavantage")
    provider = AlphaVantageProvider(cfg, adjusted=False, limiter=RateLimiter(None), today=lambda: PROVIDER_TODAY)
    frame = provider.fetch_daily("IBM", since=date(2024, 6, 25))
    assert server.requests[-1].params["function"] == "TIME_SERIES_DAILY"
    assert list(frame.columns) == PRICE_COLUMNS and len(frame) == 3
    assert (frame["adj_close"] == frame["close"]).all() and frame["volume"].gt(0).all()


def test_alphavantage_premium_endpoint_information_is_auth(server):
    server.script("IBM", Reply.json({"Information": "Thank you for using Alpha Vantage! This is a premium "
                                                    "endpoint. You may subscribe to any of the premium plans at "
                                                    "https://www.alphavantage.co/premium/ to instantly unlock all "
                                                    "premium endpoints"}))
    provider = make(AlphaVantageProvider, server, sleeps=[])
    with pytest.raises(AuthError):
        provider.fetch_daily("IBM")
    assert server.count("IBM") == 1


def test_alphavantage_incremental_uses_compact_and_filters(server):
    provider = make(AlphaVantageProvider, server)
    first = provider.fetch_daily("MSFT", since=TODAY - timedelta(days=30))
    assert server.requests[-1].params["outputsize"] == "compact"
    assert 0 < len(first) <= 22 and (first["date"] > pd.Timestamp(TODAY - timedelta(days=30))).all()
    last = first["date"].max().date()
    second = provider.fetch_daily("MSFT", since=last)
    assert second.empty and list(second.columns) == AV_COLUMNS
    assert server.requests[-1].params["outputsize"] == "compact"
    provider.fetch_daily("MSFT", since=TODAY - timedelta(days=150))
    assert server.requests[-1].params["outputsize"] == "full"


def test_alphavantage_unknown_symbol_is_not_found_without_retry(server):
    records: list[CallRecord] = []
    provider = make(AlphaVantageProvider, server, records=records)
    with pytest.raises(NotFoundError) as info:
        provider.fetch_daily("NOPE")
    assert info.value.reason == "not_found" and info.value.symbol == "NOPE" and "NOPE" in str(info.value)
    assert server.count("NOPE") == 1 and records[0].error == "not_found"


@pytest.mark.parametrize("reply", [Reply.av_note(), Reply.av_information_rate()], ids=["note", "information"])
def test_alphavantage_rate_limit_note_is_retried(server, reply):
    records: list[CallRecord] = []
    sleeps: list[float] = []
    server.script("IBM", reply, reply)
    provider = make(AlphaVantageProvider, server, records=records, sleeps=sleeps)
    frame = provider.fetch_daily("IBM")
    assert len(frame) == 300
    assert [r.attempt for r in records] == [1, 2, 3]
    assert [r.error for r in records] == ["rate_limited", "rate_limited", None]
    assert len(sleeps) == 2 and all(0 <= s <= 0.05 for s in sleeps)


def test_alphavantage_rate_limit_gives_up_after_max_retries(server):
    server.script("IBM", *[Reply.av_note()] * 10)
    records: list[CallRecord] = []
    provider = make(AlphaVantageProvider, server, records=records, sleeps=[], max_retries=2)
    with pytest.raises(RateLimitedError) as info:
        provider.fetch_daily("IBM")
    assert info.value.reason == "rate_limited" and "IBM" in str(info.value)
    assert len(records) == 3 and server.count("IBM") == 3


def test_alphavantage_daily_quota_is_not_retried(server):
    server.script("IBM", Reply.av_daily_quota())
    provider = make(AlphaVantageProvider, server, sleeps=[])
    with pytest.raises(RateLimitedError):
        provider.fetch_daily("IBM")
    assert server.count("IBM") == 1


def test_alphavantage_invalid_key_is_auth_and_never_leaks(server, caplog):
    caplog.set_level(logging.DEBUG)
    records: list[CallRecord] = []
    bad_key = "WRONG-KEY-987654"
    provider = make(AlphaVantageProvider, server, records=records, api_key=bad_key)
    with pytest.raises(AuthError) as info:
        provider.fetch_daily("AAPL")
    assert info.value.reason == "auth" and server.count("AAPL") == 1
    assert server.requests[-1].params["apikey"] == bad_key  # it was sent...
    assert bad_key not in str(info.value) and bad_key not in repr(records) and bad_key not in caplog.text


def test_alphavantage_missing_key_fails_fast(server):
    provider = make(AlphaVantageProvider, server, api_key="")
    with pytest.raises(AuthError):
        provider.fetch_daily("AAPL")
    assert server.count() == 0


def test_alphavantage_news_and_fundamentals(server):
    server.news["AAPL"] = [
        news_item("Apple profit beats estimates", "20240626T133000", ticker="AAPL"),
        news_item("Apple shares fall after downgrade", "20240627T210500", ticker="AAPL"),
        news_item("Old story", "20240601T090000", ticker="AAPL"),
    ]
    provider = make(AlphaVantageProvider, server)
    news = provider.fetch_news("AAPL", since=date(2024, 6, 25))
    assert server.requests[-1].params["function"] == "NEWS_SENTIMENT"
    assert server.requests[-1].params["tickers"] == "AAPL"
    assert server.requests[-1].params["time_from"] == "20240626T0000"
    assert list(news["title"]) == ["Apple profit beats estimates", "Apple shares fall after downgrade"]
    assert news["time_published"].iloc[1] == pd.Timestamp("2024-06-27 21:05:00")
    assert news["provider_score"].iloc[0] == pytest.approx(0.25)
    overview = provider.fetch_fundamentals("AAPL")
    assert overview["PERatio"] == 28.5 and overview["DividendYield"] is None


# --- retries ---------------------------------------------------------------------------------------
def test_503_then_success_is_retried_and_metered(server):
    records: list[CallRecord] = []
    sleeps: list[float] = []
    server.script("AAPL", Reply.error(503), Reply.error(502))
    provider = make(TiingoProvider, server, records=records, sleeps=sleeps, cost_per_call_usd=0.01)
    frame = provider.fetch_daily("AAPL", since=TODAY - timedelta(days=10))
    assert len(frame) == 8
    assert [(r.attempt, r.status, r.error) for r in records] == [
        (1, 503, "server_error"), (2, 502, "server_error"), (3, 200, None)]
    assert all(r.cost_usd == 0.01 and r.symbol == "AAPL" and r.provider == "tiingo" for r in records)
    assert len(sleeps) == 2
    # full jitter: each delay within [0, min(max, base * 2**(attempt-1))]
    assert 0 <= sleeps[0] <= 0.01 and 0 <= sleeps[1] <= 0.02


def test_429_respects_retry_after(server):
    sleeps: list[float] = []
    server.script("MSFT", Reply.error(429, retry_after=2))
    provider = make(StooqProvider, server, sleeps=sleeps)
    frame = provider.fetch_daily("MSFT")
    assert len(frame) == 300
    assert sleeps == [pytest.approx(2.0)]


def test_retry_after_beyond_cap_gives_up(server):
    server.script("MSFT", Reply.error(429, retry_after=3600))
    provider = make(StooqProvider, server, sleeps=[], max_retry_after_seconds=60)
    with pytest.raises(RateLimitedError):
        provider.fetch_daily("MSFT")
    assert server.count("MSFT") == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_hopeless_4xx_is_not_retried(server, status):
    server.script("AAPL", Reply.error(status))
    records: list[CallRecord] = []
    provider = make(StooqProvider, server, records=records, sleeps=[])
    with pytest.raises(Exception) as info:
        provider.fetch_daily("AAPL")
    expected = {400: "bad_response", 401: "auth", 403: "auth", 404: "not_found"}[status]
    assert info.value.reason == expected and len(records) == 1


def test_timeout_is_retried_then_reported(server):
    server.script("AAPL", Reply.slow(1.0), Reply.slow(1.0))
    records: list[CallRecord] = []
    provider = make(StooqProvider, server, records=records, sleeps=[], timeout_seconds=0.2, max_retries=1)
    with pytest.raises(ProviderTimeoutError) as info:
        provider.fetch_daily("AAPL")
    assert info.value.reason == "timeout"
    assert [(r.status, r.error) for r in records] == [(0, "timeout"), (0, "timeout")]


def test_connection_error_is_retried_and_redacted(caplog):
    caplog.set_level(logging.DEBUG)
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = ProviderConfig(base_url=f"http://127.0.0.1:{port}/query", api_key=KEY, requests_per_minute=60_000,
                         max_retries=2, backoff_base_seconds=0.001, name="alphavantage")
    records: list[CallRecord] = []
    provider = AlphaVantageProvider(cfg, on_call=records.append, limiter=RateLimiter(60_000), sleep=lambda s: None)
    with pytest.raises(ServerError) as info:
        provider.fetch_daily("AAPL")
    assert len(records) == 3 and all(r.status == 0 for r in records)
    assert KEY not in str(info.value) and KEY not in repr(records) and KEY not in caplog.text


# --- Tiingo / Stooq formats ------------------------------------------------------------------------
def test_tiingo_prices_and_incremental_range(server):
    provider = make(TiingoProvider, server)
    full = provider.fetch_daily("IBM")
    assert list(full.columns) == AV_COLUMNS and len(full) == 300
    assert server.requests[-1].headers.get("Authorization") == f"Token {KEY}"
    assert "token" not in server.requests[-1].params
    last = full["date"].max().date()
    again = provider.fetch_daily("IBM", since=last)
    assert again.empty
    assert server.requests[-1].params["startDate"] == (last + timedelta(days=1)).isoformat()


def test_tiingo_unknown_ticker_404_json(server):
    provider = make(TiingoProvider, server, sleeps=[])
    with pytest.raises(NotFoundError) as info:
        provider.fetch_daily("ZZZZ")
    assert "ZZZZ" in str(info.value) and server.count("ZZZZ") == 1


def test_tiingo_invalid_token_is_auth(server):
    provider = make(TiingoProvider, server, api_key="BAD-TOKEN-000", sleeps=[])
    with pytest.raises(AuthError) as info:
        provider.fetch_daily("IBM")
    assert "BAD-TOKEN-000" not in str(info.value)


def test_stooq_csv_incremental_and_unknown(server):
    provider = make(StooqProvider, server)
    full = provider.fetch_daily("AAPL")
    assert list(full.columns) == PRICE_COLUMNS and len(full) == 300
    assert server.requests[-1].params == {"s": "aapl.us", "i": "d"}
    assert (full["adj_close"] == full["close"]).all()
    last = full["date"].max().date()
    assert provider.fetch_daily("AAPL", since=last).empty
    params = server.requests[-1].params
    assert params["d1"] == (last + timedelta(days=1)).strftime("%Y%m%d") and params["d2"] == "20240701"
    mid = provider.fetch_daily("AAPL", since=date(2024, 6, 20))
    assert list(mid["date"].dt.date) == [date(2024, 6, d) for d in (21, 24, 25, 26, 27, 28)]
    with pytest.raises(NotFoundError):
        provider.fetch_daily("NOPE")
    n = server.count()
    assert provider.fetch_daily("AAPL", since=PROVIDER_TODAY).empty and server.count() == n  # nothing to ask


# --- batch updates ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_update_100_tickers_respects_rate_limit(server):
    symbols = [f"T{i:03d}" for i in range(100)]
    small = make_bars("T", end=TODAY, days=5, seed=7)
    for sym in symbols:
        server.add_symbol(sym, small)
    records: list[CallRecord] = []
    provider = make(TiingoProvider, server, requests_per_minute=6000)  # one call per 10 ms
    started = time.monotonic()
    result = update_prices(provider, symbols, since_by_symbol={}, on_call=records.append)
    elapsed = time.monotonic() - started
    assert result.failed == {} and len(result.frames) == 100 and result.calls == 100
    assert elapsed >= 99 * 60 / 6000 - 0.02
    times = sorted(r.at for r in server.requests)
    assert times[-1] - times[0] >= 0.95
    assert len(records) == 100


def test_update_reports_unknown_ticker_and_goes_on(server):
    records: list[CallRecord] = []
    server.script("MSFT", Reply.error(503))
    provider = make(AlphaVantageProvider, server, sleeps=[], cost_per_call_usd=0.002)
    result = update_prices(provider, ["AAPL", "BOGUS", "MSFT"], since_by_symbol={"AAPL": TODAY - timedelta(days=7)},
                           on_call=records.append)
    assert set(result.frames) == {"AAPL", "MSFT"}
    assert list(result.failed) == ["BOGUS"] and result.failed["BOGUS"].startswith("not_found: BOGUS")
    assert result.failed_reasons == {"BOGUS": "not_found"}
    assert result.calls == 4 == len(records)  # MSFT's 503 + retry included
    assert result.cost_usd == pytest.approx(0.008)
    assert len(result.frames["AAPL"]) == 5


def test_budget_stops_fetching_with_spec_message(server):
    records: list[CallRecord] = []
    provider = make(StooqProvider, server, cost_per_call_usd=0.25)
    budget = DailyBudget(limit_usd=10.0, spent_usd=9.25)
    symbols = ["AAPL", "MSFT", "IBM", "AAPL2"]
    result = update_prices(provider, symbols, on_call=records.append, budget=budget)
    assert list(result.frames) == ["AAPL", "MSFT", "IBM"]  # 9.50, 9.75, 10.00: still within the limit
    assert result.failed == {"AAPL2": "Daily cost limit exceeded: $10.25 > $10.00"}
    assert result.skipped == ["AAPL2"] and budget.spent_usd == pytest.approx(10.0)
    assert len(records) == 3 and server.count() == 3

    budget = DailyBudget(limit_usd=10.0, spent_usd=12.25)
    result = update_prices(provider, ["AAPL", "MSFT"], budget=budget)
    assert result.failed == {s: "Daily cost limit exceeded: $12.50 > $10.00" for s in ("AAPL", "MSFT")}
    assert result.calls == 0 and server.count() == 3
    with pytest.raises(BudgetExceededError) as info:
        StooqProvider(config(server, "stooq", cost_per_call_usd=0.25), budget=budget,
                      limiter=RateLimiter(None)).fetch_daily("AAPL")
    assert str(info.value) == "Daily cost limit exceeded: $12.50 > $10.00"
    assert info.value.reason == "budget_exceeded" and info.value.symbol == "AAPL"
    assert budget_message(12.5, 10) == "Daily cost limit exceeded: $12.50 > $10.00"


def test_budget_counts_retries(server):
    server.script("AAPL", Reply.error(503), Reply.error(503))
    provider = make(TiingoProvider, server, sleeps=[], cost_per_call_usd=1.0)
    result = update_prices(provider, ["AAPL", "MSFT"], budget=DailyBudget(2.0))
    assert result.failed_reasons == {"AAPL": "budget_exceeded", "MSFT": "budget_exceeded"}
    assert result.calls == 2 and result.cost_usd == 2.0


def test_remaining_budget_callable(server):
    provider = make(StooqProvider, server, cost_per_call_usd=0.5)
    result = update_prices(provider, ["AAPL", "MSFT"], budget=lambda: 0.4)
    assert result.failed["AAPL"] == "Daily cost limit exceeded: $0.50 > $0.40"


def test_provider_daily_limit_is_rate_limited_without_request(server):
    sleeps: list[float] = []
    provider = make(StooqProvider, server, sleeps=sleeps, requests_per_day=2)
    result = update_prices(provider, ["AAPL", "MSFT", "IBM"])
    assert set(result.frames) == {"AAPL", "MSFT"}
    assert result.failed_reasons == {"IBM": "rate_limited"} and server.count("IBM") == 0 and sleeps == []


def test_second_update_fetches_nothing_new(server):
    provider = make(TiingoProvider, server)
    first = update_prices(provider, ["AAPL", "MSFT"], since_by_symbol={"AAPL": None, "MSFT": date(2024, 6, 1)})
    since = {s: f["date"].max().date() for s, f in first.frames.items()}
    second = update_prices(provider, ["AAPL", "MSFT"], since_by_symbol=since)
    assert second.rows == 0 and second.failed == {}
    for request in server.requests[-2:]:
        assert request.params["startDate"] == "2024-06-29"


def test_key_never_in_records_logs_or_errors(server, caplog):
    caplog.set_level(logging.DEBUG)
    records: list[CallRecord] = []
    server.script("MSFT", Reply.error(503, body=f"upstream echoed apikey={KEY}"), Reply.av_note())
    av = make(AlphaVantageProvider, server, records=records, sleeps=[])
    result = update_prices(av, ["AAPL", "MSFT", "NOPE"])
    server.script("AAPL", Reply.json({"Error Message": f"Invalid API call. Please retry ({KEY})."}))
    result3 = update_prices(av, ["AAPL"])
    assert result3.failed_reasons == {"AAPL": "not_found"} and KEY not in repr(result3.failed)
    server.script("IBM", *[Reply.error(500, body=f"bad {KEY}")] * 5)
    result2 = update_prices(make(TiingoProvider, server, records=records, sleeps=[], max_retries=1), ["IBM"])
    assert result2.failed_reasons == {"IBM": "server_error"}
    text = " ".join([caplog.text, repr(records), repr(result.failed), repr(result2.failed),
                     repr(result.records), repr(av.config)])
    assert KEY not in text
    assert any("apikey=***" in r.url for r in records)


# --- file drops ------------------------------------------------------------------------------------
def test_file_drop_provider_long_and_per_ticker(tmp_path):
    bars = make_bars("X", end=TODAY, days=10, seed=3)
    long = pd.concat([bars.assign(ticker="AAA"), bars.assign(ticker="BBB")])
    long[["date", "open", "high", "low", "close", "adj_close", "volume", "ticker"]].to_csv(
        tmp_path / "prices_2024-06-28.csv.gz", index=False)
    bars[["date", "open", "high", "low", "close", "adj_close", "volume"]].to_parquet(tmp_path / "CCC.parquet")
    provider = FileDropProvider(tmp_path)
    assert provider.symbols() == ["AAA", "BBB", "CCC"]
    recent = provider.fetch_daily("aaa", since=date(2024, 6, 25))
    assert list(recent.columns) == PRICE_COLUMNS
    assert list(recent["date"].dt.date) == [date(2024, 6, 26), date(2024, 6, 27), date(2024, 6, 28)]
    assert len(provider.fetch_daily("CCC")) == 10
    with pytest.raises(NotFoundError):
        provider.fetch_daily("ZZZ")
    result = update_prices(provider, ["AAA", "CCC", "ZZZ"], since_by_symbol={"AAA": TODAY, "CCC": None})
    assert result.frames["AAA"].empty and len(result.frames["CCC"]) == 10
    assert result.failed_reasons == {"ZZZ": "not_found"} and result.calls == 0
