"""ingest_prices / ingest_fundamentals against the real database (SQLite or PostgreSQL)."""

from __future__ import annotations

import io
import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from django.core.management import CommandError, call_command

from features.models import CorporateAction, FundamentalSnapshot, IngestionRun, PriceBar, Ticker

pytestmark = pytest.mark.django_db

HEADER = "date,ticker,open,high,low,close,adj_close,volume\n"
REPO = Path(__file__).resolve().parents[2]
TEST_DATA = REPO / "tests" / "data"  # files shipped for the tests (tests/data/PROVENANCE.md)
SAMPLE_FUNDAMENTALS = REPO / "sample_data" / "fundamentals"
SAMPLE_PRICES = REPO / "sample_data" / "prices" / "sp500_sample_2013-05-21_2018-05-18.csv.gz"


def ingest(*paths: Path, **options) -> dict:
    out = io.StringIO()
    call_command("ingest_prices", *map(str, paths), "--json", stdout=out, stderr=io.StringIO(), **options)
    return json.loads(out.getvalue().strip().splitlines()[-1])


def test_load_rerun_and_correction(tmp_path):
    path = tmp_path / "bars.csv"
    path.write_text(HEADER + "2021-03-01,AAA,10,11,9,10.5,10.4,1000\n2021-03-02,AAA,10.5,12,10,11,10.9,2000\n"
                    "2021-03-01,BBB,20,21,19,20.5,20.5,300\n")
    first = ingest(path)
    assert (first["rows_read"], first["rows_loaded"], first["rows_updated"], first["rows_unchanged"]) == (3, 3, 0, 0)
    assert first["tickers"] == 2
    again = ingest(path)
    assert (again["rows_loaded"], again["rows_updated"], again["rows_unchanged"]) == (0, 0, 3)
    path.write_text(HEADER + "2021-03-01,AAA,10,11,9,10.6,10.5,1000\n2021-03-02,AAA,10.5,12,10,11,10.9,2000\n"
                    "2021-03-03,BBB,20.5,21,19,20,20,400\n")
    corrected = ingest(path)
    assert (corrected["rows_loaded"], corrected["rows_updated"], corrected["rows_unchanged"]) == (1, 1, 1)
    bar = PriceBar.objects.get(ticker__symbol="AAA", date=date(2021, 3, 1))
    assert (bar.close, bar.adj_close) == (10.6, 10.5)
    assert PriceBar.objects.count() == 4
    run = IngestionRun.objects.order_by("-id").first()
    assert run.status == "succeeded" and run.rows_updated == 1 and run.duration_seconds > 0


def test_bad_rows_are_reported_and_good_rows_load(tmp_path):
    path = tmp_path / "feed.csv"
    path.write_text(
        HEADER
        + "2021-03-01,AAA,10,11,9,10.5,10.4,1000\n"
        + "2021-03-02,AAA,10,11,9,-1,10.4,1000\n"
        + "03/03/2021,AAA,10,11,9,10.5,10.4,1000\n"  # another date format still parses
        + "not a date,AAA,10,11,9,10.5,10.4,1000\n"
        + "2021-03-04,AAA,10,11,12,10.5,10.4,1000\n"
        + "2021-03-05,AAA,10,11,9,10.5,10.4,-1\n"
    )
    result = ingest(path)
    assert result["rows_loaded"] == 2
    assert result["rows_rejected"] == 4
    assert result["rejected_by_reason"] == {
        "high_below_low": 1, "negative_volume": 1, "non_positive_price": 1, "unparseable_date": 1,
    }
    run = IngestionRun.objects.get(id=result["ingestion_runs"][0])
    assert {r["reason"] for r in run.rejected_rows} == set(result["rejected_by_reason"])
    assert {r["line"] for r in run.rejected_rows} == {3, 5, 6, 7}


def test_unreadable_file_changes_nothing(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text(HEADER + "2021-03-01,AAA,10,11,9,10.5,10.4,1000\n")
    ingest(good)
    bad = tmp_path / "bad.csv"
    bad.write_text("date,ticker,open,close\n2021-03-02,AAA,1,2\n")
    with pytest.raises(CommandError, match="missing required column"):
        ingest(good, bad)
    assert PriceBar.objects.count() == 1
    assert IngestionRun.objects.filter(status="failed", file=str(bad)).exists()


def test_raw_alpha_vantage_file_records_corporate_actions():
    path = TEST_DATA / "DA-KO-T-2021-04-21.csv.gz"
    raw = pd.read_csv(path)
    result = ingest(path)
    assert result["tickers"] == 1 and result["rows_read"] == result["rows_loaded"] == len(raw)
    ko = Ticker.objects.get(symbol="KO")
    splits = CorporateAction.objects.filter(ticker=ko, kind="split")
    assert [(str(s.date), s.value) for s in splits] == [("2012-08-13", 2.0)]
    dividends = CorporateAction.objects.filter(ticker=ko, kind="dividend")
    assert dividends.count() == (raw["dividend_amount"] > 0).sum() > 80
    assert ingest(path)["rows_unchanged"] == len(raw)
    assert CorporateAction.objects.filter(ticker=ko).count() == splits.count() + dividends.count()


def test_fundamentals_snapshots_are_normalized():
    # three layouts: 2012 (no sector, "63.802B" strings), 2013 (USD billions), 2024 (plain USD, yield as a fraction)
    paths = [SAMPLE_FUNDAMENTALS / "constituents-financials_2012-12-27.csv",
             SAMPLE_FUNDAMENTALS / "constituents-financials_2013-02-10.csv",
             TEST_DATA / "constituents-financials_2024-10-10.csv"]
    out = io.StringIO()
    call_command("ingest_fundamentals", *map(str, paths), "--json", stdout=out, stderr=io.StringIO())
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    rows = [len(pd.read_csv(p)) for p in paths]
    assert result["snapshots"] == 3 and result["rows_loaded"] == sum(rows) == FundamentalSnapshot.objects.count()
    mmm = {s.as_of.isoformat(): s for s in FundamentalSnapshot.objects.filter(ticker__symbol="MMM")}
    # "63.802B" string, USD billions as a plain number, then plain USD: all end up in USD.
    assert mmm["2012-12-27"].market_cap == pytest.approx(63.802e9)
    assert mmm["2013-02-10"].market_cap == pytest.approx(70.537e9)
    assert mmm["2024-10-10"].market_cap == pytest.approx(74168279040)
    # percent (2.49) in old files, fraction (0.0207) in new ones
    assert mmm["2012-12-27"].dividend_yield == pytest.approx(0.0249)
    assert mmm["2024-10-10"].dividend_yield == pytest.approx(0.0207)
    assert mmm["2013-02-10"].eps == pytest.approx(6.32)
    assert Ticker.objects.get(symbol="MMM").sector == "Industrials"
    again = io.StringIO()
    call_command("ingest_fundamentals", str(paths[1]), "--json", stdout=again, stderr=io.StringIO())
    assert json.loads(again.getvalue().strip().splitlines()[-1])["rows_unchanged"] == rows[1]


def test_sample_price_file_loads_every_row_and_reloads_unchanged():
    expected = pd.read_csv(SAMPLE_PRICES, usecols=["date", "ticker"])
    first = ingest(SAMPLE_PRICES)
    assert first["rows_read"] == first["rows_loaded"] == len(expected)
    assert first["rows_rejected"] == 0 and first["tickers"] == expected["ticker"].nunique()
    assert PriceBar.objects.count() == len(expected)
    assert PriceBar.objects.filter(ticker__symbol="AAPL").count() == (expected["ticker"] == "AAPL").sum()
    second = ingest(SAMPLE_PRICES)
    assert second["rows_unchanged"] == len(expected)
    assert second["rows_loaded"] == second["rows_updated"] == 0
