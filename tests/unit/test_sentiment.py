"""Finance-aware sentiment: sign agreement on clearly positive and negative finance sentences, and daily
aggregation on headlines. The accuracy on Financial PhraseBank (not shipped: CC BY-NC-SA) is measured by
tests/benchmarks/bench_sentiment.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.sentiment import aggregate_daily, next_trading_day, score_many, score_text

HEADLINES = Path(__file__).resolve().parents[1] / "data" / "news_headlines_2011-07.csv"
MIN_SIGN_AGREEMENT = 0.90
MIN_PER_LABEL = 0.85

# Sentences written for the tests in the style of company reports and financial news (not taken from
# any data set): each reads clearly positive, clearly negative or neutral for the company's shareholders.
POSITIVE = [
    "Net sales rose by 14 % to EUR 312.5 mn from EUR 274.1 mn a year earlier.",
    "Operating profit increased to EUR 21.8 mn from EUR 15.2 mn in the first quarter of 2010.",
    "The company's order backlog grew to a record EUR 1.2 bn at the end of June.",
    "Earnings per share improved to EUR 0.46 from EUR 0.31.",
    "The group swung to a pre-tax profit of EUR 4.3 mn from a loss of EUR 2.9 mn a year ago.",
    "Net loss narrowed to EUR 1.1 mn from EUR 6.4 mn in the corresponding period of 2009.",
    "The board will propose a higher dividend of EUR 0.60 per share for 2010.",
    "Shares in the company jumped 9 % after it raised its full-year guidance.",
    "The company won a EUR 45 mn contract to supply turbines to a wind farm in Sweden.",
    "Quarterly revenue exceeded analysts' expectations for the third consecutive quarter.",
    "Operating margin strengthened to 11.2 % from 8.5 % thanks to lower production costs.",
    "The bank's net interest income climbed 18 % on strong lending growth.",
    "Analysts upgraded the stock to buy, citing a robust outlook for the paper business.",
    "Cash flow from operations doubled to EUR 58 mn.",
    "The company expects net sales to grow by more than 10 % in 2011.",
    "Comparable sales in its stores increased 6.3 % in December.",
    "The restructuring cut annual costs by EUR 30 mn, ahead of the target.",
    "Profit before taxes surged to EUR 9.7 mn from EUR 3.2 mn.",
    "The telecom operator gained 120,000 new subscribers during the quarter.",
    "Demand recovered strongly in Asia, lifting deliveries by 25 %.",
    "The share price rallied to its highest level in three years.",
    "The company said its financial position remains strong and its debt decreased by EUR 40 mn.",
    "Exports to Russia rebounded in the second half of the year.",
    "The airline's passenger numbers rose 7 % in May, with the load factor improving to 79 %.",
    "The merger is expected to boost earnings from the first full year.",
    "Operating profit excluding one-off items beat the consensus estimate of EUR 12 mn.",
    "Order intake increased by 32 % year-on-year to EUR 410 mn.",
    "The retailer reported its best Christmas season ever.",
    "Gross margin improved by two percentage points.",
    "The company returned to profit in the fourth quarter.",
]
NEGATIVE = [
    "Net sales decreased by 12 % to EUR 185.3 mn from EUR 210.6 mn.",
    "Operating profit fell to EUR 3.4 mn from EUR 11.9 mn in the same period last year.",
    "The company swung to an operating loss of EUR 7.2 mn from a profit of EUR 4.8 mn.",
    "The group's pre-tax loss widened to EUR 15.6 mn.",
    "Earnings per share dropped to EUR 0.05 from EUR 0.22.",
    "The company will cut 350 jobs as part of a cost-saving programme.",
    "Shares plunged 17 % after the company issued a profit warning.",
    "The company lowered its outlook for the full year due to weak demand.",
    "Order intake declined by 28 % compared with the previous year.",
    "Analysts downgraded the stock to sell after the disappointing results.",
    "The operating margin weakened to 2.1 % from 6.8 %.",
    "Revenue missed expectations as sales in Europe slumped.",
    "The firm booked an impairment charge of EUR 24 mn on its Spanish unit.",
    "Deliveries were delayed because of problems at the new factory.",
    "The group's net debt increased to EUR 520 mn.",
    "Comparable sales fell 4.5 % in the key Nordic market.",
    "The company filed for bankruptcy protection after talks with creditors collapsed.",
    "The share price tumbled to its lowest level since 2003.",
    "Cash flow from operating activities turned negative.",
    "The mill will be closed permanently, resulting in 180 redundancies.",
    "Net profit shrank to EUR 0.9 mn from EUR 5.5 mn.",
    "The company warned that its second-half result would be clearly weaker than expected.",
    "Passenger traffic decreased 9 % in April because of the volcanic ash cloud.",
    "The company was fined EUR 12 mn for breaching competition rules.",
    "Sales volumes dropped sharply as customers reduced their inventories.",
    "The bank's loan losses rose to EUR 88 mn.",
    "The dividend will be cut to EUR 0.10 per share from EUR 0.45.",
    "Production costs increased faster than prices, eroding margins.",
    "The company recalled 40,000 units because of a safety defect.",
    "Market share declined in all regions during the quarter.",
]
NEUTRAL = [
    "The company will publish its interim report on 28 April 2011.",
    "The annual general meeting will be held in Helsinki on 15 March.",
    "The company has offices in Finland, Sweden and Estonia.",
    "The new plant will be located near the port of Kotka.",
    "The company employs about 2,400 people in 12 countries.",
    "The transaction is subject to approval by the competition authorities.",
    "The chief executive will present the strategy at a press conference on Tuesday.",
    "The product range includes valves, pumps and control systems.",
    "The shares will be listed on the NASDAQ OMX Helsinki exchange.",
    "The agreement covers the maintenance of the vessels for five years.",
    "The company's head office is in Espoo.",
    "The figures in the report are unaudited.",
    "The board of directors consists of six members.",
    "Deliveries of the equipment are scheduled for the autumn.",
    "The company is a subsidiary of a Swedish holding group.",
    "The report was prepared in accordance with IFRS.",
    "The conference call will be held in English.",
    "The plant produces packaging board for the food industry.",
    "The new chief financial officer will start on 1 September.",
    "The contract was signed in Stockholm.",
]


def test_sign_agreement_on_written_finance_sentences():
    sentences = pd.DataFrame(
        [(t, "positive") for t in POSITIVE] + [(t, "negative") for t in NEGATIVE], columns=["sentence", "label"]
    )
    scores = score_many(sentences["sentence"])
    labels = sentences["label"].to_numpy()
    expected = np.where(labels == "positive", 1.0, -1.0)
    agreement = float(np.mean(np.sign(scores) == expected))  # a zero score counts as wrong
    by_label = {
        label: float(np.mean(np.sign(scores[labels == label]) == sign))
        for label, sign in (("positive", 1.0), ("negative", -1.0))
    }
    print(f"sign agreement on {len(sentences)} written finance sentences: {agreement:.1%} {by_label}")
    assert agreement >= MIN_SIGN_AGREEMENT
    assert min(by_label.values()) >= MIN_PER_LABEL  # not bought by always answering one sign
    neutral = score_many(NEUTRAL)
    assert np.mean(np.abs(neutral)) < 0.5 * np.mean(np.abs(scores))


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


def test_aggregate_daily_on_headlines_file():
    sample = pd.read_csv(HEADLINES, usecols=["date", "ticker", "headline"])
    out = aggregate_daily(sample)  # date-only rows: they count for their own day
    assert out["count"].sum() == len(sample)
    assert out[["ticker", "date"]].duplicated().sum() == 0
    assert len(out) == len(sample.drop_duplicates(["ticker", "date"])) < len(sample)
    assert out["score"].between(-1, 1).all()
    assert set(out["date"].dt.date.astype(str)) <= set(sample["date"])
    for one in (out.iloc[0], out.loc[out["count"].idxmax()]):
        rows = sample[(sample["ticker"] == one["ticker"]) & (sample["date"] == one["date"].date().isoformat())]
        assert one["count"] == len(rows)
        assert one["score"] == pytest.approx(score_many(rows["headline"]).mean())
    # Headlines in this sample are not all neutral: the scorer separates days.
    assert (out["score"] > 0.05).any() and (out["score"] < -0.05).any()
