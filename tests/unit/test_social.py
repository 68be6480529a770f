"""Social-media sentiment: the post scorer (slang, emoji, cash-tags), the point-in-time daily aggregation
and the ``social_*`` engine columns (after-close rule, empty days, truncation and incremental invariance),
on written posts and on the bundled real sample of StockNet tweets (tests/data/PROVENANCE.md).

Accuracy on posts their authors tagged Bullish/Bearish and on Financial PhraseBank (neither shipped) is
measured by tests/benchmarks/bench_social_sentiment.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import engine as E
from features import feature_sets
from features.social import (
    aggregate_social_daily,
    clean_post,
    extract_cashtags,
    post_directions,
    score_post,
    score_posts,
)

DATA = Path(__file__).resolve().parents[1] / "data"
TWEETS = DATA / "stocknet_tweets_2014-01_2014-02_sample.csv.gz"
PRICES = Path(__file__).resolve().parents[2] / "sample_data" / "prices" / "sp500_sample_2013-05-21_2018-05-18.csv.gz"
SPEC = feature_sets.FEATURE_SETS["default_social"]
SOCIAL = SPEC.groups()["social"]

# Posts written for the tests in the style of StockTwits and Twitter (not taken from any data set):
# each reads clearly bullish or bearish to a trader.
BULLISH = [
    "$AAPL to the moon 🚀🚀🚀",
    "Loading up on $TSLA calls before earnings",
    "$AMD breakout confirmed, new highs incoming 📈",
    "bought the dip on $NVDA, diamond hands 💎🙌",
    "$KO looks undervalued here, adding more",
    "going long $MSFT, this is a beast",
    "$BA short squeeze is starting, shorts are trapped",
    "Tendies tomorrow, $SPY calls printing 🔥",
    "$JPM bullish flag on the daily, easy money",
    "$DIS gap up on the streaming numbers, bulls in control 🐂",
    "$XOM oversold bounce, buying more",
    "all time highs again for $AMZN 🚀",
]
BEARISH = [
    "$AAPL puts printing, this is going to tank 📉",
    "Bagholders of $GME are in for pain",
    "shorting $TSLA here, overvalued garbage",
    "$AMC pump and dump, stay away",
    "$BA bleeding all day, sell before it dumps more 🩸",
    "$INTC downtrend intact, bearish 🐻",
    "$NFLX gap down after the miss, rip",
    "dumped all my $KO, this is dead money",
    "$WFC another scandal, selling everything",
    "taking profits on $MSFT before it drops",
    "$PTON bag holding since 40, terrible company 🤡",
    "$CCL will crash through support tomorrow",
]


def test_written_posts_read_bullish_and_bearish():
    bull, bear = score_posts(BULLISH), score_posts(BEARISH)
    assert (bull > 0.05).mean() >= 0.9 and (bear < -0.05).mean() >= 0.9, (bull, bear)
    # the same texts through plain VADER: slang and market emoji are what it misses
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    vader = SentimentIntensityAnalyzer()
    plain = np.array([vader.polarity_scores(t)["compound"] for t in BULLISH + BEARISH])
    truth = np.r_[np.ones(len(BULLISH)), -np.ones(len(BEARISH))]
    ours = np.r_[bull, bear]
    assert (np.sign(ours) == truth).mean() > (np.sign(plain) == truth).mean() + 0.25


def test_slang_emoji_and_the_words_that_are_not_slang():
    assert score_post("🚀🚀") > 0.5 and score_post("📉📉") < -0.5
    assert score_post("$XYZ 🔥🔥") > 0  # VADER's own emoji text ("fire") reads negative
    assert score_post("buy the dip") > 0 and score_post("another dip") < 0
    assert score_post("short squeeze coming") > 0 > score_post("short this stock")
    assert score_post("short term chart") == 0.0 and score_post("it took a long time") == 0.0
    assert score_post("not bullish at all") < 0  # VADER's negation still applies
    # cash-tags are tickers, not words: $LOW, $WIN, $GOOD, $FIT carry no sentiment
    assert score_post("$LOW $WIN $GOOD $FIT") == 0.0
    assert score_post("RT @happyguy: https://t.co/abc $AAPL") == 0.0
    assert clean_post("RT @a: $AAPL to the moon 🚀 http://t.co/x") == "tothemoon xrocketx"
    assert score_post("") == 0.0 and score_post(None) == 0.0 and score_post(float("nan")) == 0.0
    assert score_post("$KO is garbage, don&#39;t touch it") < 0  # HTML entities decoded (StockTwits bodies)
    scores = score_posts(BULLISH + BEARISH)
    assert scores.dtype == np.float64 and np.all((scores >= -1) & (scores <= 1))


def test_cashtags():
    assert extract_cashtags("$aapl and $MSFT, again $AAPL") == ["AAPL", "MSFT"]
    assert extract_cashtags("$BRK.B up, $BTC.X down, $100 and US$5 are money, a$b is not") == ["BRK.B", "BTC.X"]
    assert extract_cashtags("no tags") == [] and extract_cashtags(None) == []


def test_directions_prefer_the_authors_tag():
    scores = np.array([0.5, -0.5, 0.01, 0.5, -0.5])
    assert post_directions(scores).tolist() == [1, -1, 0, 1, -1]
    assert post_directions(scores, ["", "", "", "Bearish", "bullish"]).tolist() == [1, -1, 0, -1, 1]


def test_daily_aggregation_after_close_weekend_and_holiday():
    posts = pd.DataFrame({
        "ticker": ["ko", "KO", "KO", "KO", "KO", "JPM"],
        "posted_at": pd.to_datetime([
            "2024-01-02 15:59:59", "2024-01-02 16:00:00",  # Tue before / at the close (New York)
            "2024-01-05 18:00:00", "2024-01-06 10:00:00",  # Fri after close, Saturday -> Mon 8th
            "2024-07-03 17:00:00",  # after close before Independence Day -> Fri 5th
            "2024-01-02 20:59:59",  # UTC-aware below: 15:59:59 New York
        ]).tz_localize("America/New_York").tz_convert("UTC"),
        "score": [0.5, -0.5, 0.2, 0.4, 1.0, -0.3],
        "label": ["", "", "Bearish", "", "", ""],
    })
    posts.loc[5, "posted_at"] = pd.Timestamp("2024-01-02 20:59:59", tz="UTC")
    out = aggregate_social_daily(posts, holidays=["2024-07-04"])
    assert list(out.columns) == ["ticker", "date", "score_sum", "count", "bullish", "bearish"]
    got = {(r.ticker, r.date.date().isoformat()): (round(r.score_sum, 6), r.count, r.bullish, r.bearish)
           for r in out.itertuples()}
    assert got == {
        ("JPM", "2024-01-02"): (-0.3, 1, 0, 1),
        ("KO", "2024-01-02"): (0.5, 1, 1, 0),
        ("KO", "2024-01-03"): (-0.5, 1, 0, 1),
        ("KO", "2024-01-08"): (0.6, 2, 1, 1),  # the author's Bearish tag wins over a positive score
        ("KO", "2024-07-05"): (1.0, 1, 1, 0),
    }
    assert aggregate_social_daily(None).empty and aggregate_social_daily(posts.iloc[:0]).empty


# --- the engine's social_* columns -------------------------------------------------------------------------
def _bars(tickers=("KO", "JPM", "XOM", "DIS"), start="2013-10-01", end="2014-04-30") -> pd.DataFrame:
    bars = pd.read_csv(PRICES)
    bars = bars[bars["ticker"].isin(tickers) & (bars["date"] >= start) & (bars["date"] <= end)]
    return bars.assign(date=pd.to_datetime(bars["date"])).reset_index(drop=True)


def _real_posts() -> pd.DataFrame:
    tweets = pd.read_csv(TWEETS, dtype=str, keep_default_na=False)
    return pd.DataFrame({"ticker": tweets["ticker"], "posted_at": pd.to_datetime(tweets["datetime_utc"], utc=True),
                         "score": score_posts(tweets["headline"])})


def test_engine_columns_on_a_written_day_sequence():
    days = pd.bdate_range("2024-01-01", periods=30)
    bars = pd.DataFrame({"ticker": "KO", "date": days, "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.0,
                         "adj_close": 10.0, "volume": 1e6})
    ny = "America/New_York"
    posts = pd.DataFrame({
        "ticker": "KO",
        "posted_at": [pd.Timestamp(f"{days[d].date()} {t}", tz=ny) for d, t in
                      [(25, "10:00"), (25, "12:00"), (25, "16:30"), (27, "09:00"), (27, "09:30"), (27, "11:00")]],
        "score": [0.6, -0.2, 0.9, 0.4, 0.4, -0.8],
    })
    f = E.compute_features(bars, social=aggregate_social_daily(posts), params=SPEC).set_index("date")
    d = days
    assert f.loc[d[25], "social_count_1"] == 2 and f.loc[d[25], "social_mean_1"] == pytest.approx(0.2)
    assert f.loc[d[25], "social_bullish_1"] == pytest.approx(0.5)
    # the 16:30 post counts for the next session only
    assert f.loc[d[26], "social_count_1"] == 1 and f.loc[d[26], "social_mean_1"] == pytest.approx(0.9)
    assert f.loc[d[27], "social_count_5"] == 6
    assert f.loc[d[27], "social_mean_5"] == pytest.approx((0.6 - 0.2 + 0.9 + 0.4 + 0.4 - 0.8) / 6)
    assert f.loc[d[27], "social_bullish_5"] == pytest.approx(4 / 6)
    # a day without posts: count 0, mean 0 (neutral, as news), bullish share undefined
    assert f.loc[d[28], "social_count_1"] == 0 and f.loc[d[28], "social_mean_1"] == 0
    assert np.isnan(f.loc[d[28], "social_bullish_1"])
    # abnormal volume: log((1 + posts today) / (1 + mean posts of the 20 bars before))
    assert f.loc[d[25], "social_abnormal_20"] == pytest.approx(np.log(3.0))
    assert f.loc[d[27], "social_abnormal_20"] == pytest.approx(np.log(4 / (1 + 3 / 20)))
    assert f.loc[d[20], "social_abnormal_20"] == 0.0 and np.isnan(f.loc[d[19], "social_abnormal_20"])
    assert np.isnan(f.loc[d[3], "social_count_5"]) and f.loc[d[4], "social_count_5"] == 0  # warm-up
    # without post data the columns are unknown, not zero; the other columns do not move
    none = E.compute_features(bars, params=SPEC).set_index("date")
    assert none[SOCIAL].isna().all().all()
    others = [c for c in none.columns if c not in SOCIAL and c != "ticker"]
    pd.testing.assert_frame_equal(none[others], f[others])


def test_default_set_is_unchanged_and_social_set_only_adds_columns():
    assert not any(c.startswith("social_") for c in feature_sets.FEATURE_COLUMNS)
    assert "social_windows" not in feature_sets.DEFAULT_SPEC.to_dict()
    assert SPEC.columns()[: len(feature_sets.FEATURE_COLUMNS)] == feature_sets.FEATURE_COLUMNS
    assert SPEC.model_columns()[-len(SOCIAL):] == SOCIAL
    assert SPEC.version_hash() != feature_sets.DEFAULT_SPEC.version_hash()
    with pytest.raises(ValueError, match="social_windows"):
        feature_sets.FeatureSpec.from_params({"social_windows": [0]})


def test_real_posts_truncation_and_incremental_invariance():
    bars, posts = _real_posts_bars()
    full = E.compute_features(bars, social=aggregate_social_daily(posts), params=SPEC)
    assert (full.groupby("ticker", observed=True)["social_count_1"].sum() > 50).all()
    for cut in ("2014-01-17", "2014-02-03", "2014-02-27"):
        t = pd.Timestamp(cut)
        # data as known at the close of day t: bars up to t, posts before its 16:00 close
        close = t.tz_localize("America/New_York") + pd.Timedelta(hours=16)
        known = aggregate_social_daily(posts[posts["posted_at"] < close])
        short = E.compute_features(bars[bars["date"] <= t], social=known, params=SPEC)
        a = full[full["date"] <= t].set_index(["ticker", "date"])[SOCIAL]
        b = short.set_index(["ticker", "date"])[SOCIAL]
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    since = pd.Timestamp("2014-02-10")
    inc = E.compute_features_incremental(bars, since, social=aggregate_social_daily(posts), params=SPEC)
    ref = full[full["date"] >= since].reset_index(drop=True)
    pd.testing.assert_frame_equal(inc[["ticker", "date", *SOCIAL]], ref[["ticker", "date", *SOCIAL]],
                                  check_exact=True)


def _real_posts_bars() -> tuple[pd.DataFrame, pd.DataFrame]:
    posts = _real_posts()
    return _bars(tuple(sorted(set(posts["ticker"]) - {"GOOG"}))), posts
