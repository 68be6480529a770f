"""The StockTwits provider over real HTTP against the local stand-in (tests/fakes/social_server.py):
pagination by cursor, retries on 429 with Retry-After, the rate limiter, metering of every request."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from features.providers import (
    SOCIAL_PROVIDERS,
    CallRecord,
    DailyBudget,
    NotFoundError,
    ProviderConfig,
    RateLimiter,
    StockTwitsProvider,
    budget_message,
)
from features.providers.base import BudgetExceededError
from features.providers.stocktwits import POST_COLUMNS, parse_messages
from tests.fakes.provider_server import Reply
from tests.fakes.social_server import FakeStockTwitsServer, stocktwits_message
from tests.unit.test_providers import FakeClock


def _stream(symbol: str, n: int, *, first_id: int = 1000) -> list[dict]:
    return [
        stocktwits_message(first_id + i, f"${symbol} message {i}", f"2024-03-0{1 + i // 40}T1{i % 10}:00:00Z",
                           symbols=(symbol,), user_id=i % 7,
                           sentiment=("Bullish" if i % 3 == 0 else "Bearish" if i % 3 == 1 else None))
        for i in range(n)
    ]


@pytest.fixture
def server():
    srv = FakeStockTwitsServer()
    srv.messages["AAPL"] = _stream("AAPL", 75)
    srv.messages["KO"] = _stream("KO", 5, first_id=5000)
    yield srv
    srv.close()


def make(server, *, records=None, sleeps=None, limiter=None, budget=None, **overrides) -> StockTwitsProvider:
    values = dict(base_url=server.base_url, requests_per_minute=60_000, requests_per_day=None, cost_per_call_usd=0.0,
                  timeout_seconds=5.0, max_retries=3, backoff_base_seconds=0.01, backoff_max_seconds=0.05,
                  name="stocktwits")
    values.update(overrides)
    cfg = ProviderConfig(**values)
    return StockTwitsProvider(cfg, on_call=records.append if records is not None else None,
                              limiter=limiter or RateLimiter(None), budget=budget,
                              sleep=sleeps.append if sleeps is not None else (lambda s: None))


def test_defaults_and_registry(monkeypatch):
    monkeypatch.delenv("STOCKTWITS_BASE_URL", raising=False)
    cfg = ProviderConfig.from_env("stocktwits")
    assert cfg.base_url == "https://api.stocktwits.com/api/2" and cfg.requests_per_minute == 3
    assert SOCIAL_PROVIDERS["stocktwits"] is StockTwitsProvider
    monkeypatch.setenv("STOCKTWITS_BASE_URL", "http://127.0.0.1:9/api/2/")
    assert ProviderConfig.from_env("stocktwits").base_url == "http://127.0.0.1:9/api/2"


def test_first_fetch_takes_the_newest_page_in_the_documented_format(server):
    records: list[CallRecord] = []
    frame = make(server, records=records).fetch_posts("aapl", since_id=None)
    assert list(frame.columns) == POST_COLUMNS and len(frame) == 30
    assert frame["post_id"].tolist() == [str(i) for i in range(1074, 1044, -1)]  # newest first
    assert str(frame["created_at"].dt.tz) == "UTC"
    assert set(frame["label"]) == {"bullish", "bearish", ""}
    assert frame["symbols"].iloc[0] == ["AAPL"] and frame["author"].iloc[0] == str(74 % 7)
    assert len(records) == 1 and records[0].status == 200 and records[0].endpoint == "streams/symbol"
    assert records[0].symbol == "AAPL" and records[0].bytes > 1000
    assert server.requests[-1].path == "/api/2/streams/symbol/AAPL.json" and server.requests[-1].params == {}


def test_pages_back_by_cursor_to_the_last_stored_id(server):
    records: list[CallRecord] = []
    frame = make(server, records=records).fetch_posts("AAPL", since_id=1010, max_pages=5)
    ids = frame["post_id"].astype(int)
    assert ids.tolist() == list(range(1074, 1010, -1))  # every message after 1010, once
    # 64 new messages: pages of 30 from the newest, then max= the oldest id seen (inclusive: deduplicated)
    params = [r.params for r in server.requests]
    assert params == [{"since": "1010"}, {"since": "1010", "max": "1045"}, {"since": "1010", "max": "1016"}]
    assert len(records) == 3 and all(r.error is None for r in records)
    # nothing new: one request, no rows
    again = make(server).fetch_posts("AAPL", since_id=1074)
    assert again.empty and list(again.columns) == POST_COLUMNS
    # max_pages bounds a long gap
    assert len(make(server).fetch_posts("AAPL", since_id=900, max_pages=2)) == 59


def test_rate_limited_reply_is_retried_after_retry_after_and_metered(server):
    server.script("KO", Reply.error(429, retry_after=2, body='{"response": {"status": 429}}'), Reply.error(503))
    records: list[CallRecord] = []
    sleeps: list[float] = []
    frame = make(server, records=records, sleeps=sleeps).fetch_posts("KO")
    assert len(frame) == 5
    assert [r.status for r in records] == [429, 503, 200]
    assert [r.error for r in records] == ["rate_limited", "server_error", None]
    assert sleeps[0] >= 2.0 and len(sleeps) == 2  # Retry-After honoured, then a backoff


def test_limiter_spaces_requests_and_budget_stops_before_the_call(server):
    clock = FakeClock()
    limiter = RateLimiter(3, None, clock=clock, sleep=clock.sleep, today=clock.today)
    provider = make(server, limiter=limiter)
    provider.fetch_posts("AAPL", since_id=1010, max_pages=5)  # three pages
    assert clock.sleeps == pytest.approx([20.0, 20.0])  # 3 a minute: 20 s apart
    records: list[CallRecord] = []
    paid = make(server, records=records, cost_per_call_usd=0.01, budget=DailyBudget(0.015))
    paid.fetch_posts("KO")
    before = len(server.requests)
    with pytest.raises(BudgetExceededError) as err:
        paid.fetch_posts("KO")
    assert str(err.value) == budget_message(0.02, 0.015) and len(server.requests) == before
    assert [r.cost_usd for r in records] == [0.01]


def test_unknown_symbol_and_bad_replies(server):
    with pytest.raises(NotFoundError, match="ZZZZ"):
        make(server).fetch_posts("ZZZZ")
    server.script("KO", Reply(status=200, body=b"<html>maintenance</html>"))
    with pytest.raises(Exception, match="not JSON"):
        make(server, max_retries=0).fetch_posts("KO")


def test_parse_messages_skips_unusable_ones():
    good = stocktwits_message(7, "$AAPL &#39;calls&#39; 🚀", "2024-03-01T15:00:00Z", sentiment="Bullish")
    frame = parse_messages([good, {"id": 8, "body": "", "created_at": "2024-03-01T15:00:00Z"},
                            {"id": 9, "body": "x", "created_at": "yesterday"}, {"body": "no id"}, "junk"])
    assert frame["post_id"].tolist() == ["7"] and frame["label"].tolist() == ["bullish"]
    assert frame["created_at"].iloc[0] == pd.Timestamp("2024-03-01 15:00", tz="UTC")
    with pytest.raises(NotImplementedError):
        StockTwitsProvider(ProviderConfig(base_url="http://127.0.0.1:9", name="stocktwits"),
                           limiter=RateLimiter(None)).fetch_daily("AAPL", since=date(2024, 1, 1))
