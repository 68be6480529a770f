"""Finance-aware sentiment: accuracy on Financial PhraseBank and daily aggregation on Reuters headlines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.sentiment import aggregate_daily, next_trading_day, score_many, score_text

MIN_SIGN_AGREEMENT = 0.70


def _phrasebank(shared_data) -> pd.DataFrame:
    path = shared_data / "news" / "Sentences_AllAgree.txt"
    rows = []
    for line in path.read_text(encoding="latin-1").splitlines():
        if "@" in line:
            sentence, label = line.rsplit("@", 1)
            rows.append((sentence.strip(), label.strip()))
    return pd.DataFrame(rows, columns=["sentence", "label"])


def test_phrasebank_sign_agreement(shared_data):
    bank = _phrasebank(shared_data)
    assert len(bank) == 2264
    polar = bank[bank["label"].isin(["positive", "negative"])]
    assert len(polar) == 873
    scores = score_many(polar["sentence"])
    expected = np.where(polar["label"] == "positive", 1.0, -1.0)
    agreement = float(np.mean(np.sign(scores) == expected))  # a zero score counts as wrong
    by_label = {
        label: float(np.mean(np.sign(scores[polar["label"].to_numpy() == label]) == sign))
        for label, sign in (("positive", 1.0), ("negative", -1.0))
    }
    print(f"Financial PhraseBank all-agree sign agreement: {agreement:.1%} on {len(polar)} sentences {by_label}")
    assert agreement >= MIN_SIGN_AGREEMENT
    assert min(by_label.values()) >= 0.6  # not bought by always answering one sign
    neutral = score_many(bank.loc[bank["label"] == "neutral", "sentence"])
    assert np.mean(np.abs(neutral)) < np.mean(np.abs(scores))


def test_score_text_finance_words():
    assert score_text("Quarterly profit rose 20% and the company beat estimates") > 0.3
    assert score_text("Shares fell after the downgrade; the company announced layoffs") < -0.3
    assert score_text("Net loss narrowed to EUR 2 mn from EUR 5 mn") > 0
    assert score_text("Operating loss widened to EUR 9 mn") < 0
    assert score_text("Operating profit decreased to EUR 3.1 mn") < 0
    assert score_text("Sales increased by 5 %") > 0
    assert score_text("") == 0.0 and score_text(None) == 0.0 and score_text(float("nan")) == 0.0
    assert score_text("BRIEF-Acme upgraded to buy") == score_text("Acme upgraded to buy")
    scores = score_many(["great results", "terrible losses", "the meeting is on Tuesday"])
    assert scores.shape == (3,) and scores.dtype == np.float64
    assert np.all((scores >= -1) & (scores <= 1))
    assert scores[0] > 0 > scores[1] and scores[2] == 0.0


def test_aggregate_daily_after_close_moves_to_next_trading_day():
    news = pd.DataFrame({
        "ticker": ["aapl", "AAPL", "AAPL", "AAPL", "MSFT", "MSFT"],
        "time_published": [
            "20240102T100000",  # Tue before close -> Tue
            "20240102T161500",  # Tue after close -> Wed
            "20240105T170000",  # Fri after close -> Mon 8th
            "20240106T090000",  # Saturday -> Mon 8th
            "20240103T155959",  # before close -> Wed
            "20240103T160000",  # at the close -> Thu
        ],
        "score": [0.5, -0.5, 0.2, 0.4, 1.0, -1.0],
    })
    out = aggregate_daily(news)
    assert list(out.columns) == ["ticker", "date", "score", "count"]
    got = {(r.ticker, r.date.date().isoformat()): (round(r.score, 6), r.count) for r in out.itertuples()}
    assert got == {
        ("AAPL", "2024-01-02"): (0.5, 1),
        ("AAPL", "2024-01-03"): (-0.5, 1),
        ("AAPL", "2024-01-08"): (0.3, 2),
        ("MSFT", "2024-01-03"): (1.0, 1),
        ("MSFT", "2024-01-04"): (-1.0, 1),
    }


def test_aggregate_daily_timezones_and_holidays():
    utc = pd.to_datetime(["2024-01-02 20:30", "2024-01-02 21:30", "2024-07-03 21:00"]).tz_localize("UTC")
    news = pd.DataFrame({"ticker": "X", "published_at": utc, "headline": ["profit rose", "profit rose", "sales fell"]})
    out = aggregate_daily(news, holidays=["2024-07-04"])
    # 20:30 UTC = 15:30 New York (same day); 21:30 UTC = 16:30 (next day); July 3rd 17:00 -> July 5th
    assert [d.date().isoformat() for d in out["date"]] == ["2024-01-02", "2024-01-03", "2024-07-05"]
    assert out["score"].iloc[2] < 0 < out["score"].iloc[0]
    assert next_trading_day(pd.Timestamp("2024-07-03"), holidays=["2024-07-04"]) == pd.Timestamp("2024-07-05")
    iso = pd.DataFrame({"ticker": "X", "published_at": ["2024-01-02T15:30:00-05:00", "2024-01-02T21:30:00Z"],
                        "score": [1.0, -1.0]})
    assert [d.date().isoformat() for d in aggregate_daily(iso)["date"]] == ["2024-01-02", "2024-01-03"]
    empty = aggregate_daily(pd.DataFrame(columns=["ticker", "date", "headline"]))
    assert empty.empty and list(empty.columns) == ["ticker", "date", "score", "count"]


def test_aggregate_daily_on_reuters_sample(shared_data):
    path = shared_data / "news" / "reuters_headlines_2011-2018.csv.gz"
    sample = pd.read_csv(path, nrows=3000, usecols=["date", "ticker", "headline"])
    out = aggregate_daily(sample)  # date-only rows: they count for their own day
    assert out["count"].sum() == len(sample)
    assert out[["ticker", "date"]].duplicated().sum() == 0
    assert out["score"].between(-1, 1).all()
    assert set(out["date"].dt.date.astype(str)) <= set(sample["date"])
    one = out.iloc[0]
    rows = sample[(sample["ticker"] == one["ticker"]) & (sample["date"] == one["date"].date().isoformat())]
    assert one["count"] == len(rows)
    assert one["score"] == pytest.approx(score_many(rows["headline"]).mean())
    # Headlines in this sample are not all neutral: the scorer separates days.
    assert (out["score"] > 0.05).any() and (out["score"] < -0.05).any()
