"""Fundamentals refreshed from a provider on a weekly cycle within its daily quota, point in time, and
news fetched daily when a news provider is configured (issue 16, item 5): against the stand-in
Alpha Vantage server (``tests.fakes.provider_server``), with the shared request limits and cost
records of the real services."""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command

from features.models import FundamentalSnapshot, IngestionRun, NewsItem, Ticker
from features.providers import CallRecord, reset_limiters
from features.services.data_refresh import refresh_fundamentals
from features.tasks import refresh_fundamentals_task, update_news_task
from investml.ledger import record_api_calls
from monitoring.models import CostRecord
from tests.fakes.provider_server import FakeProviderServer, news_item, overview_item

pytestmark = pytest.mark.django_db

KEY = "TESTKEY-123456"
GOOD = ["AAPL", "AMZN", "GOOGL", "JNJ", "JPM", "MSFT", "WMT", "XOM", "KO"]
UNKNOWN = "AAAZ"  # the provider does not know it: OVERVIEW answers {}
MONDAY = datetime(2024, 3, 4, 23, 15, tzinfo=UTC)  # the schedule's time: 18:15 in New York


@pytest.fixture
def server(settings, monkeypatch):
    reset_limiters()
    fake = FakeProviderServer(api_keys=(KEY,))
    for symbol in GOOD:
        fake.overviews[symbol] = overview_item(symbol)
    settings.PIPELINE_CONFIG = settings.PIPELINE_CONFIG.with_overrides({"providers": {"alphavantage": {
        "requests_per_minute": 60_000, "requests_per_day": 0, "cost_per_call_usd": 0.01, "timeout_seconds": 5,
        "max_retries": 0}}})
    settings.ML_DAILY_COST_LIMIT_USD = 10.0
    settings.ML_FUNDAMENTALS_PROVIDER = "alphavantage"
    monkeypatch.setenv("ALPHAVANTAGE_BASE_URL", fake.alphavantage_url)
    monkeypatch.setenv("ALPHAVANTAGE_API_KEY", KEY)
    Ticker.objects.bulk_create([Ticker(symbol=s) for s in [*GOOD, UNKNOWN]] + [Ticker(symbol="OLD", active=False)])
    yield fake
    fake.close()
    reset_limiters()


def _requested(fake: FakeProviderServer, since: int = 0) -> list[str]:
    return [r.symbol for r in fake.requests[since:] if r.params.get("function") == "OVERVIEW"]


def test_a_weekly_cycle_covers_the_universe_a_share_a_day_point_in_time(server):
    # 10 active tickers, a 7-day cycle: 2 a day (the inactive one never)
    first_week: dict[date, list[str]] = {}
    for day in range(7):
        now = MONDAY + timedelta(days=day)
        before = len(server.requests)
        summary = refresh_fundamentals(now=now)
        assert summary.universe == 10 and summary.cycle_days == 7
        first_week[now.date()] = _requested(server, before)
        assert len(first_week[now.date()]) == (2 if day < 5 else 0), (day, summary.as_dict())
        assert summary.calls == len(first_week[now.date()])
    asked = [s for day in first_week.values() for s in day]
    assert sorted(asked) == sorted([*GOOD, UNKNOWN])  # every active ticker once, nothing twice
    assert first_week[MONDAY.date()] == [UNKNOWN, "AAPL"]  # never refreshed: alphabetically

    # each good ticker has one snapshot, dated the New York day it was fetched (when it became known)
    snapshots = {s.ticker.symbol: s for s in FundamentalSnapshot.objects.select_related("ticker")}
    assert sorted(snapshots) == sorted(GOOD)
    for day, symbols in first_week.items():
        for symbol in symbols:
            if symbol != UNKNOWN:
                assert snapshots[symbol].as_of == day and snapshots[symbol].source == "alphavantage"
    apple = snapshots["AAPL"]
    assert (apple.pe_ratio, apple.eps, apple.market_cap, apple.dividend_yield, apple.sector, apple.price) == \
        (28.5, 6.1, 2.95e12, 0.0044, "TECHNOLOGY", None)
    # the unknown ticker failed once and waits for the next cycle instead of taking a request a day
    failed = IngestionRun.objects.filter(kind="fundamentals", rows_rejected=1).get()
    assert failed.rejected_by_reason == {"not_found": 1} and failed.rejected_rows[0]["ticker"] == UNKNOWN
    assert CostRecord.objects.filter(source="alphavantage", detail="OVERVIEW").count() == 10  # every request paid

    # a week after the first day, its tickers are due again; a changed value is a new snapshot,
    # the one known before stays as it was
    server.overviews["AAPL"] = overview_item("AAPL", pe="31.2", eps="6.4")
    before = len(server.requests)
    summary = refresh_fundamentals(now=MONDAY + timedelta(days=7))
    assert _requested(server, before) == [UNKNOWN, "AAPL"] and summary.due == 2
    history = list(FundamentalSnapshot.objects.filter(ticker__symbol="AAPL").order_by("as_of")
                   .values_list("as_of", "pe_ratio", "eps"))
    assert history == [(date(2024, 3, 4), 28.5, 6.1), (date(2024, 3, 11), 31.2, 6.4)]
    # the same day again: nothing is due, nothing requested
    before = len(server.requests)
    assert refresh_fundamentals(now=MONDAY + timedelta(days=7, hours=1)).requested == []
    assert _requested(server, before) == []


def test_a_run_stays_within_the_providers_remaining_daily_quota(server, settings):
    settings.PIPELINE_CONFIG = settings.PIPELINE_CONFIG.with_overrides(
        {"providers": {"alphavantage": {"requests_per_day": 3}}})
    Ticker.objects.bulk_create([Ticker(symbol=f"T{i:02d}") for i in range(20)])
    for i in range(20):
        server.overviews[f"T{i:02d}"] = overview_item(f"T{i:02d}")
    # 30 active tickers: a share of 5 a day, but the free tier's quota leaves 2 (prices took 1 today)
    record_api_calls(records=[CallRecord(provider="alphavantage", endpoint="TIME_SERIES_DAILY_ADJUSTED", symbol="SPY",
                                         status=200, bytes=5000, seconds=0.2, cost_usd=0.01, attempt=1)],
                     day=MONDAY.date())

    before = len(server.requests)
    summary = refresh_fundamentals(now=MONDAY)
    assert summary.planned == 5 and summary.quota_left == 2, summary.as_dict()
    assert len(_requested(server, before)) == 2 and summary.deferred == 3
    assert "2 requests left today of 3" in summary.warning
    # the quota is spent: a second run the same day asks nothing
    before = len(server.requests)
    again = refresh_fundamentals(now=MONDAY + timedelta(minutes=30))
    assert again.quota_left == 0 and _requested(server, before) == []
    # the next day the never-refreshed continue where the first day stopped
    before = len(server.requests)
    refresh_fundamentals(now=MONDAY + timedelta(days=1))
    assert _requested(server, before) == ["AMZN", "GOOGL", "JNJ"]
    # a configured cap below the share is honoured too
    settings.ML_FUNDAMENTALS_MAX_REQUESTS_PER_DAY = 1
    before = len(server.requests)
    refresh_fundamentals(now=MONDAY + timedelta(days=2))
    assert _requested(server, before) == ["JPM"]


def test_tasks_do_nothing_without_a_provider_and_fetch_the_days_news_with_one(server, settings):
    settings.ML_FUNDAMENTALS_PROVIDER = ""
    settings.ML_NEWS_PROVIDER = ""
    assert refresh_fundamentals_task.apply().get()["skipped"].startswith("no fundamentals provider configured")
    assert update_news_task.apply().get() == {"skipped": "no news provider configured (ML_NEWS_PROVIDER)"}
    out = io.StringIO()
    call_command("refresh_fundamentals", "--json", stdout=out, stderr=io.StringIO())
    assert out.getvalue().startswith("nothing done: no fundamentals provider configured")
    assert server.requests == []
    out = io.StringIO()
    call_command("refresh_fundamentals", "--provider", "alphavantage", "--tickers", "MSFT", "--json", stdout=out,
                 stderr=io.StringIO())
    assert json.loads(out.getvalue().splitlines()[-1])["refreshed"] == ["MSFT"]
    with pytest.raises(CommandError, match="not a provider with a fundamentals endpoint"):
        call_command("refresh_fundamentals", "--provider", "stooq", stdout=io.StringIO(), stderr=io.StringIO())
    server.requests.clear()

    server.news["AAPL"] = [news_item("Apple profit beats estimates", "20240304T093000", ticker="AAPL")]
    settings.ML_NEWS_PROVIDER = "alphavantage"
    result = update_news_task.apply().get()
    assert result["tickers_requested"] == 10 and result["items_added"] == 1 and result["calls"] == 10
    assert NewsItem.objects.get().ticker.symbol == "AAPL"
    assert sorted(r.params["tickers"] for r in server.requests) == sorted([*GOOD, UNKNOWN])  # the active ones

    settings.ML_NEWS_PROVIDER = "stooq"
    with pytest.raises(ValueError, match="ML_NEWS_PROVIDER='stooq': not a provider with a news endpoint"):
        update_news_task.apply().get()


def test_as_of_is_the_new_york_day_the_values_became_known(server):
    # 02:30 UTC on Tuesday is still Monday evening in New York
    refresh_fundamentals(now=datetime(2024, 3, 5, 2, 30, tzinfo=UTC), tickers=["AAPL"])
    assert FundamentalSnapshot.objects.get(ticker__symbol="AAPL").as_of == date(2024, 3, 4)


def test_the_schedules_are_seeded_with_the_others():
    from django_celery_beat.models import PeriodicTask

    from training.orchestrator.schedules import seed_schedules

    rows = {row["task"]: row for row in seed_schedules()}
    for task, hour, minute in (("features.update_news", "22", "30"), ("features.refresh_fundamentals", "23", "15")):
        assert rows[task]["action"] in ("created", "unchanged", "updated"), rows[task]
        entry = PeriodicTask.objects.get(task=task)
        assert entry.enabled and (entry.crontab.hour, entry.crontab.minute, entry.crontab.day_of_week) == \
            (hour, minute, "*")
