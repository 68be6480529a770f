"""ingest_social on the bundled real tweets (tests/data/PROVENANCE.md) and on malformed rows made from them,
StockTwits JSON lines, the ``social_*`` columns of ``build_features --export``, and the StockTwits provider
feeding the pipeline's market-data stage through the local stand-in (metered, incremental)."""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from django.core.management import CommandError, call_command

from features.models import IngestionRun, SocialPost, Ticker
from features.providers import reset_limiters
from features.services.social import update_social, update_social_if_configured
from features.social import extract_cashtags
from monitoring.models import CostRecord
from tests.fakes.provider_server import Reply
from tests.fakes.social_server import FakeStockTwitsServer, stocktwits_message
from training.models import PipelineRun
from training.orchestrator.errors import PermanentStageError
from training.orchestrator.stage_work import stage_update_market_data

pytestmark = pytest.mark.django_db

DATA = Path(__file__).resolve().parents[1] / "data"
TWEETS = DATA / "stocknet_tweets_2014-01_2014-02_sample.csv.gz"
PRICES = Path(__file__).resolve().parents[2] / "sample_data" / "prices" / "sp500_sample_2013-05-21_2018-05-18.csv.gz"
KNOWN = ["DIS", "JPM", "KO", "XOM"]  # the sample's tickers with prices; its GOOG rows have none
SOCIAL = ["social_mean_1", "social_count_1", "social_bullish_1", "social_mean_5", "social_count_5",
          "social_bullish_5", "social_abnormal_20"]


def ingest(path, *args) -> dict:
    out = io.StringIO()
    call_command("ingest_social", str(path), *args, "--json", stdout=out, stderr=io.StringIO())
    return json.loads(out.getvalue().strip().splitlines()[-1])


def tweets() -> pd.DataFrame:
    return pd.read_csv(TWEETS, dtype=str, keep_default_na=False)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        frame.to_csv(fh, index=False)
    return path


def test_ingest_real_tweets_summary_rejects_by_reason_and_rerun_loads_nothing(tmp_path):
    Ticker.objects.bulk_create([Ticker(symbol=s) for s in KNOWN])
    real = tweets()
    # malformed rows made from real ones, each with one defect
    bad = real.iloc[[0, 1, 2, 3, 4, 5, 6]].copy()
    bad.iloc[0, bad.columns.get_loc("datetime_utc")] = ""
    bad.iloc[1, bad.columns.get_loc("datetime_utc")] = "the day after the FOMC"
    bad.iloc[2, bad.columns.get_loc("datetime_utc")] = "2099-01-02T15:00:00Z"
    bad.iloc[3, bad.columns.get_loc("headline")] = "   "
    bad.iloc[4, bad.columns.get_loc("ticker")] = "$$$"
    bad.iloc[5, bad.columns.get_loc("ticker")] = ""
    bad.iloc[5, bad.columns.get_loc("headline")] = "no cash-tag in this one"
    bad.iloc[6, bad.columns.get_loc("ticker")] = ""  # falls back to the cash-tags in the text: it loads
    path = write_csv(pd.concat([real, bad], ignore_index=True), tmp_path / "tweets.csv.gz")

    first = ingest(path)
    assert first["rows_read"] == len(real) + 7
    assert first["rejected_by_reason"] == {
        "empty_text": 1, "future_time": 1, "invalid_ticker": 1, "missing_time": 1, "no_ticker": 1,
        "unknown_ticker": int((real["ticker"] == "GOOG").sum()), "unparseable_time": 1,
    }
    assert first["rows_rejected"] == sum(first["rejected_by_reason"].values())
    assert first["rows_loaded"] + first["rows_unchanged"] + first["rows_rejected"] == first["rows_read"]
    # one post per (tweet, ticker): the known tickers' rows, plus the row whose tickers came from its cash-tags
    expected = real[real["ticker"].isin(KNOWN)].drop_duplicates(["tweet_id", "ticker"])
    tags = set(extract_cashtags(bad.iloc[6]["headline"])) & set(KNOWN)
    extra = {(bad.iloc[6]["tweet_id"], t) for t in tags} - set(zip(expected["tweet_id"], expected["ticker"],
                                                                     strict=True))
    assert first["posts_loaded"] == SocialPost.objects.count() == len(expected) + len(extra)
    # GOOG (its rows) and the cash-tags of the fallback row that have no prices here: skipped, not stored
    mentioned = set(extract_cashtags(bad.iloc[6]["headline"]))
    assert first["tickers"] == 4 and first["unknown_tickers"] == len((mentioned | {"GOOG"}) - set(KNOWN))
    assert first["first_post"].startswith("2014-01-01") and first["last_post"].startswith("2014-02-28")

    run = IngestionRun.objects.get(pk=first["ingestion_run"])
    assert run.kind == "social" and run.status == "succeeded" and run.rows_rejected == first["rows_rejected"]
    lines = {r["reason"]: r["line"] for r in run.rejected_rows}
    assert lines["missing_time"] == len(real) + 2 and lines["no_ticker"] == len(real) + 7  # after the header

    post = SocialPost.objects.get(post_key=expected.iloc[0]["tweet_id"], ticker__symbol=expected.iloc[0]["ticker"])
    assert post.source == "twitter" and post.provider == "file" and -1 <= post.sentiment <= 1
    assert post.posted_at == pd.Timestamp(expected.iloc[0]["datetime_utc"]).to_pydatetime()
    assert len(post.author) == 32 and post.author != expected.iloc[0]["user"]  # a keyed hash, not the handle

    again = ingest(path)
    assert again["posts_loaded"] == again["rows_loaded"] == 0
    assert again["rows_unchanged"] == first["rows_loaded"] + first["rows_unchanged"]
    assert SocialPost.objects.count() == first["posts_loaded"]
    assert ingest(TWEETS, "--limit", "10")["rows_read"] == 10

    with pytest.raises(CommandError, match="missing required column"):
        (tmp_path / "bad.csv").write_text("when,ticker,words\n2014-01-02,KO,hello\n")
        ingest(tmp_path / "bad.csv")
    with pytest.raises(CommandError, match="no such file"):
        ingest(tmp_path / "absent.csv")


def test_stocktwits_json_lines_with_author_tags(tmp_path):
    Ticker.objects.bulk_create([Ticker(symbol=s) for s in ("AAPL", "KO")])
    lines = [
        stocktwits_message(11, "$AAPL to the moon 🚀", "2024-03-01T15:00:00Z", symbols=("AAPL", "KO"),
                           sentiment="Bullish", user_id=42),
        stocktwits_message(12, "$KO bagholders everywhere", "2024-03-01T21:30:00Z", symbols=("KO",),
                           sentiment="Bearish"),
        stocktwits_message(13, "$TSLA only", "2024-03-01T15:00:00Z", symbols=("TSLA",)),
        # a flat object without an id: keyed by the hash of its content; naive time = New York
        {"created_at": "2024-03-01 15:59:00", "text": "$KO steady dividend", "author": "x", "source": "forum"},
        {"created_at": "2024-03-01 15:59:00", "text": "$KO  steady dividend", "author": "x", "source": "forum"},
    ]
    path = tmp_path / "posts.jsonl"
    path.write_text("\n".join([*(json.dumps(m) for m in lines), "{not json", "[1, 2]"]) + "\n")
    summary = ingest(path)
    assert summary["rows_read"] == 7 and summary["posts_loaded"] == 4
    assert summary["rejected_by_reason"] == {"bad_json": 2, "unknown_ticker": 1}
    assert summary["rows_unchanged"] == 1  # the same flat post again, spacing aside
    tagged = {(p.post_key, p.ticker.symbol): p for p in SocialPost.objects.select_related("ticker")}
    assert tagged[("11", "AAPL")].author_label == "bullish" and tagged[("11", "KO")].author_label == "bullish"
    assert tagged[("12", "KO")].author_label == "bearish" and tagged[("12", "KO")].sentiment < 0
    assert tagged[("11", "AAPL")].source == "stocktwits" and tagged[("11", "AAPL")].sentiment > 0
    flat = SocialPost.objects.get(source="forum")
    assert flat.post_key.startswith("h:") and flat.posted_at == datetime(2024, 3, 1, 20, 59, tzinfo=UTC)


def _export(tmp_path: Path, name: str) -> pd.DataFrame:
    out = io.StringIO()
    path = tmp_path / f"{name}.parquet"
    call_command("build_features", "--feature-set", "default_social", "--tickers", "DIS,JPM,KO,XOM,AAPL",
                 "--full", "--end", "2014-06-30", "--export", str(path), "--json", stdout=out, stderr=io.StringIO())
    frame = pd.read_parquet(path)
    return frame.assign(date=pd.to_datetime(frame["date"])).set_index(["ticker", "date"]).sort_index()


def test_build_features_export_holds_social_columns_and_later_posts_change_no_earlier_day(tmp_path):
    call_command("ingest_prices", str(PRICES), stdout=io.StringIO(), stderr=io.StringIO())
    real = tweets()
    cut = pd.Timestamp("2014-02-01", tz="UTC")
    stamps = pd.to_datetime(real["datetime_utc"], utc=True)
    early = ingest(write_csv(real[stamps < cut], tmp_path / "january.csv.gz"))
    assert early["posts_loaded"] > 100
    a = _export(tmp_path, "a")
    assert list(a.columns[-len(SOCIAL):]) == SOCIAL

    later = ingest(write_csv(real[stamps >= cut], tmp_path / "february.csv.gz"))
    assert later["posts_loaded"] > 100
    # two posts on either side of the close of Tue 2014-03-04 (naive times are New York time)
    (tmp_path / "close.jsonl").write_text(
        json.dumps({"time": "2014-03-04 15:59:59", "ticker": "KO", "text": "KO dividend raised, great", "id": "c1"})
        + "\n" + json.dumps({"time": "2014-03-04 16:00:00", "ticker": "KO", "text": "KO earnings miss", "id": "c2"})
        + "\n")
    assert ingest(tmp_path / "close.jsonl")["posts_loaded"] == 2
    b = _export(tmp_path, "b")

    jan = _rows(a, None, "2014-01-31")
    pd.testing.assert_frame_equal(a[jan], b[_rows(b, None, "2014-01-31")], check_exact=True)  # social too
    feb = _rows(b, "2014-02-03", "2014-02-28", KNOWN)
    assert b.loc[feb, "social_count_1"].sum() > a.loc[_rows(a, "2014-02-03", "2014-02-28", KNOWN),
                                                     "social_count_1"].sum()

    window = _rows(b, "2014-01-02", "2014-02-28", KNOWN)
    for ticker in KNOWN:
        rows = b.loc[_rows(b, "2014-01-02", "2014-02-28", [ticker]), SOCIAL]
        assert rows[["social_mean_1", "social_count_1", "social_mean_5", "social_count_5",
                     "social_abnormal_20"]].notna().all().all(), ticker
        assert (rows["social_count_1"] > 0).mean() > 0.3 and rows["social_bullish_5"].notna().any()
    posts = SocialPost.objects.filter(ticker__symbol__in=KNOWN, posted_at__lt=datetime(2014, 3, 1, tzinfo=UTC))
    # every post of the window lands on exactly one bar (Dec 31 after-close posts on Jan 2)
    assert b.loc[window, "social_count_1"].sum() == posts.count()
    aapl = b.loc["AAPL"]  # prices, no posts: counted as none, bullish share undefined
    assert (aapl["social_count_1"] == 0).all() and aapl["social_bullish_1"].isna().all()

    day, after = pd.Timestamp("2014-03-04"), pd.Timestamp("2014-03-05")
    assert b.loc[("KO", day), "social_count_1"] == a.loc[("KO", day), "social_count_1"] + 1
    assert b.loc[("KO", after), "social_count_1"] == a.loc[("KO", after), "social_count_1"] + 1
    assert b.loc[("KO", after), "social_mean_1"] < 0 < b.loc[("KO", day), "social_mean_1"]
    assert not np.isfinite(b.loc[_rows(b, None, "2013-06-18", ["KO"]), "social_abnormal_20"]).any()
    assert np.isfinite(b.loc[_rows(b, "2013-06-19", "2013-06-19", ["KO"]), "social_abnormal_20"]).all()


def _rows(frame: pd.DataFrame, start: str | None, end: str, tickers: list[str] | None = None) -> np.ndarray:
    dates = frame.index.get_level_values("date")
    mask = (dates <= pd.Timestamp(end)) & (dates >= pd.Timestamp(start or "1900-01-01"))
    if tickers is not None:
        mask &= frame.index.get_level_values("ticker").isin(tickers)
    return np.asarray(mask)


@pytest.fixture
def stocktwits(settings, monkeypatch):
    reset_limiters()
    server = FakeStockTwitsServer()
    settings.PIPELINE_CONFIG = settings.PIPELINE_CONFIG.with_overrides({"providers": {"stocktwits": {
        "requests_per_minute": 60_000, "requests_per_day": 0, "cost_per_call_usd": 0.001, "timeout_seconds": 5,
        "max_retries": 2, "backoff_base_seconds": 0.01}}})
    settings.ML_SOCIAL_PROVIDER = ""
    monkeypatch.setenv("STOCKTWITS_BASE_URL", server.base_url)
    try:
        yield server
    finally:
        server.close()
        reset_limiters()


def _messages(symbol: str, ids: range, day: str = "2024-03-01") -> list[dict]:
    return [stocktwits_message(i, f"${symbol} breakout, buying more 🚀" if i % 2 else f"${symbol} puts, dumping",
                               f"{day}T1{i % 10}:00:00Z", symbols=(symbol,), user_id=i,
                               sentiment="Bullish" if i % 2 else None) for i in ids]


def test_update_social_through_the_stand_in_is_metered_and_incremental(stocktwits):
    Ticker.objects.bulk_create([Ticker(symbol=s) for s in ("AAPL", "KO", "NOPE")])
    stocktwits.messages["AAPL"] = _messages("AAPL", range(100, 140))
    stocktwits.messages["KO"] = _messages("KO", range(500, 505))
    stocktwits.script("KO", Reply.error(429, retry_after=0))

    first = update_social(provider="stocktwits", tickers=["AAPL", "KO", "NOPE"])
    assert first.posts_added == 30 + 5 and first.tickers_updated == 2  # a first fetch takes the newest page
    assert list(first.failed) == ["NOPE"] and first.failed["NOPE"].startswith("not_found")
    assert first.calls == 4  # AAPL, KO twice (a 429 retried), NOPE
    rows = CostRecord.objects.filter(source="stocktwits")
    assert rows.count() == 4 and float(sum(r.cost_usd for r in rows)) == pytest.approx(0.004)
    assert first.cost_usd == pytest.approx(0.004)
    post = SocialPost.objects.get(post_key="139", ticker__symbol="AAPL")
    assert post.provider == "stocktwits" and post.author_label == "bullish" and post.sentiment > 0
    assert SocialPost.objects.get(post_key="138", ticker__symbol="AAPL").sentiment < 0

    stocktwits.messages["AAPL"] += _messages("AAPL", range(140, 175), day="2024-03-02")
    second = update_social(provider="stocktwits", tickers=["AAPL", "KO"])
    assert second.posts_added == 35 and second.posts_unchanged == 0
    aapl = [r.params for r in stocktwits.requests if r.symbol == "AAPL"][1:]
    assert aapl == [{"since": "139"}, {"since": "139", "max": "145"}]  # from the newest stored id, by cursor
    third = update_social(provider="stocktwits", tickers=["AAPL", "KO"])
    assert (third.posts_added, third.calls) == (0, 2)
    with pytest.raises(ValueError, match="unknown social provider"):
        update_social(provider="twitter", tickers=["AAPL"])


def test_pipeline_market_stage_fetches_posts_only_when_a_social_provider_is_set(stocktwits, settings):
    Ticker.objects.create(symbol="KO")
    stocktwits.messages["KO"] = _messages("KO", range(700, 710))
    run = PipelineRun.objects.create(trigger="command", scope="tickers:KO", mode="sync", tickers=["KO"])

    counts = stage_update_market_data(run=run)  # bars from the bundled files, nothing else
    assert "social" not in counts and stocktwits.count() == 0 and update_social_if_configured() is None

    settings.ML_SOCIAL_PROVIDER = "stocktwits"
    counts = stage_update_market_data(run=run)
    assert counts["social"]["posts_added"] == 10 and counts["social"]["calls"] == 1
    assert counts["social"]["failed"] == 0 and stocktwits.count("KO") == 1
    run.refresh_from_db()
    assert float(run.cost_usd) == pytest.approx(0.001)

    settings.ML_SOCIAL_PROVIDER = "myspace"
    with pytest.raises(PermanentStageError, match="unknown social provider 'myspace'"):
        stage_update_market_data(run=run)
