"""ingest_news (a headlines file in the Reuters file's columns), provider news over HTTP, and the daily
sentiment for the feature store."""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest
from django.core.management import CommandError, call_command

from features.models import IngestionRun, NewsItem, Ticker
from features.providers import reset_limiters
from features.sentiment import aggregate_daily
from features.services.news import daily_sentiment, update_news
from features.trading_calendar import trading_holidays
from monitoring.models import CostRecord
from tests.fakes.provider_server import FakeProviderServer, news_item

pytestmark = pytest.mark.django_db

KEY = "TESTKEY-123456"
# Headlines written for the tests (fictional companies) in the columns of the Reuters headlines file:
# date-only rows, duplicates (same ticker, day and headline, also with other spacing), one headline
# under two tickers, BRIEF-/UPDATE n- items. The rows after the first ROWS are left out by --limit.
HEADLINES = Path(__file__).resolve().parents[1] / "data" / "news_headlines_2011-07.csv"
ROWS = 60
KNOWN = ["ACME", "GLBX", "INIT"]


def ingest(path, *args) -> dict:
    out = io.StringIO()
    call_command("ingest_news", str(path), *args, "--json", stdout=out, stderr=io.StringIO())
    return json.loads(out.getvalue().strip().splitlines()[-1])


def test_headlines_file_ingest_and_aggregate_per_ticker_and_day():
    whole = pd.read_csv(HEADLINES, dtype=str, keep_default_na=False)
    raw = whole.head(ROWS)
    assert len(whole) > ROWS and set(whole["ticker"].iloc[ROWS:]) - set(raw["ticker"])  # the limit matters
    Ticker.objects.bulk_create([Ticker(symbol=s) for s in KNOWN])

    known_only = ingest(HEADLINES, "--limit", str(ROWS))
    assert known_only["rows_read"] == ROWS
    assert known_only["unknown_tickers"] == raw["ticker"].nunique() - len(KNOWN)
    known_rows = raw[raw["ticker"].isin(KNOWN)]
    assert known_only["rejected_by_reason"]["unknown_ticker"] == ROWS - len(known_rows)
    assert known_only["rows_loaded"] + known_only["rows_unchanged"] == len(known_rows)
    assert NewsItem.objects.count() == known_only["rows_loaded"]

    everything = ingest(HEADLINES, "--limit", str(ROWS), "--create-tickers")
    assert everything["unknown_tickers"] == 0
    # duplicates (same ticker, day and headline, whatever the spacing) are stored once
    expected = raw.assign(h=raw["headline"].str.split().str.join(" ")).drop_duplicates(["ticker", "date", "h"])
    assert len(expected) < len(raw)
    assert NewsItem.objects.count() == len(expected)
    assert everything["rows_loaded"] == len(expected) - known_only["rows_loaded"]
    assert everything["tickers"] == raw["ticker"].nunique()
    assert set(Ticker.objects.values_list("symbol", flat=True)) == set(raw["ticker"])  # none from past the limit
    assert ingest(HEADLINES, "--limit", str(ROWS))["rows_loaded"] == 0  # a re-run adds nothing

    scores = list(NewsItem.objects.values_list("sentiment", flat=True))
    assert all(-1.0 <= s <= 1.0 for s in scores) and len({round(s, 3) for s in scores}) > 10
    sentiment = dict(NewsItem.objects.values_list("headline", "sentiment"))
    assert sentiment["Hooli shares jump on strong user growth"] > 0.3
    assert sentiment["Initech shares fall after fraud allegations"] < -0.3
    assert sentiment["Hooli to hold annual meeting in September"] == 0.0
    run = IngestionRun.objects.filter(kind="news").order_by("-id").first()
    assert (run.status, run.source, run.rows_read) == ("succeeded", "file", ROWS)

    daily = daily_sentiment()
    assert list(daily.columns) == ["ticker", "date", "score", "count"]
    assert daily["count"].sum() == len(expected)
    assert not daily.duplicated(["ticker", "date"]).any()
    # the same as aggregating the de-duplicated file rows directly (date-only items stay on their day)
    direct = aggregate_daily(expected[["ticker", "date", "headline"]], time_col="date",
                             holidays=trading_holidays(years=[2011, 2012]))
    merged = daily.merge(direct, on=["ticker", "date"], suffixes=("", "_direct"), how="outer", validate="1:1")
    assert len(merged) == len(daily) == len(direct)
    assert (merged["count"] == merged["count_direct"]).all()
    assert merged["score"].to_numpy() == pytest.approx(merged["score_direct"].to_numpy(), abs=1e-9)

    acme = daily_sentiment(tickers=["acme"], start=date(2011, 7, 7), end=date(2011, 7, 12))
    assert set(acme["ticker"]) == {"ACME"}
    assert acme["date"].min() >= pd.Timestamp("2011-07-07") and acme["date"].max() <= pd.Timestamp("2011-07-12")
    in_window = expected[(expected["ticker"] == "ACME") & expected["date"].between("2011-07-07", "2011-07-12")]
    assert acme["count"].sum() == len(in_window) > 0


def test_news_file_with_times_sources_and_bad_rows(tmp_path):
    Ticker.objects.create(symbol="AAA")
    path = tmp_path / "news.csv"
    path.write_text(
        "date,time,ticker,headline,source,url\n"
        "2024-03-01,09:30,AAA,Profit beats estimates,wire,https://example.com/1\n"
        "2024-03-01,17:05,AAA,Company cuts guidance,wire,https://example.com/2\n"  # after the close
        "2024-03-02T10:00:00Z,,AAA,Shares rally on upgrade,wire,\n"  # Saturday, with an offset
        "not a date,,AAA,Something happened,wire,\n"
        "2024-03-01,,AAA,,wire,\n"
        "2024-03-01,,,Orphan headline,wire,\n"
    )
    result = ingest(path)
    assert result["rows_loaded"] == 3
    assert result["rejected_by_reason"] == {"missing_headline": 1, "missing_ticker": 1, "unparseable_date": 1}
    first = NewsItem.objects.get(url="https://example.com/1")
    assert first.published_at == datetime(2024, 3, 1, 14, 30, tzinfo=UTC) and first.source == "wire"
    daily = daily_sentiment(tickers=["AAA"])
    assert daily["date"].tolist() == [pd.Timestamp("2024-03-01"), pd.Timestamp("2024-03-04")]
    assert daily["count"].tolist() == [1, 2]
    with pytest.raises(CommandError, match="missing required column"):
        bad = tmp_path / "bad.csv"
        bad.write_text("when,ticker,text\n2024-03-01,AAA,x\n")
        ingest(bad)


def test_update_news_from_alpha_vantage(settings, monkeypatch):
    reset_limiters()
    server = FakeProviderServer(api_keys=(KEY,))
    try:
        server.news["AAPL"] = [
            news_item("Apple profit beats estimates", "20240628T093000", ticker="AAPL"),
            news_item("Apple shares fall after downgrade", "20240628T170500", ticker="AAPL"),
        ]
        settings.PIPELINE_CONFIG = settings.PIPELINE_CONFIG.with_overrides({"providers": {"alphavantage": {
            "requests_per_minute": 60_000, "requests_per_day": 0, "cost_per_call_usd": 0.01, "timeout_seconds": 5,
            "max_retries": 1}}})
        monkeypatch.setenv("ALPHAVANTAGE_BASE_URL", server.alphavantage_url)
        monkeypatch.setenv("ALPHAVANTAGE_API_KEY", KEY)

        summary = update_news(provider="alphavantage", tickers=["AAPL"])
        assert (summary.items_added, summary.calls, summary.failed) == (2, 1, {})
        item = NewsItem.objects.get(headline="Apple profit beats estimates")
        assert item.provider == "alphavantage" and item.published_at == datetime(2024, 6, 28, 13, 30, tzinfo=UTC)
        assert item.sentiment > 0 > NewsItem.objects.get(headline__contains="downgrade").sentiment
        assert CostRecord.objects.filter(source="alphavantage", detail="NEWS_SENTIMENT").count() == 1

        again = update_news(provider="alphavantage", tickers=["AAPL"])
        assert (again.items_added, again.items_unchanged) == (0, 2)
        assert server.requests[-1].params["time_from"] == "20240628T0000"  # from the newest stored day
        with pytest.raises(ValueError, match="no news endpoint"):
            update_news(provider="stooq", tickers=["AAPL"])
    finally:
        server.close()
        reset_limiters()
