"""Parsing and validating price files, without a database."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.pricefiles import PriceFileError, read_price_file, ticker_from_filename

HEADER = "Date,Symbol,Open,High,Low,Close,Adj Close,Volume\n"
# Alpha Vantage raw daily file, unadjusted, shipped gzipped under tests/data (see its PROVENANCE.md)
RAW_AAPL = Path(__file__).resolve().parents[1] / "data" / "DA-AAPL-T-2021-04-21.csv.gz"


def write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


@pytest.mark.parametrize(
    ("name", "ticker"),
    [
        ("AAPL.csv", "AAPL"),
        ("aapl.us.csv.gz", "AAPL"),
        ("BRK-B.parquet", "BRK-B"),
        ("DA-AAPL-T-2021-04-21.csv", "AAPL"),
        ("DA-KO-T-2021-04-21.csv", "KO"),
        ("MSFT_daily.csv", "MSFT"),
        ("all prices 2020.csv", None),
    ],
)
def test_ticker_from_filename(name, ticker):
    assert ticker_from_filename(Path(name)) == ticker


def test_every_bad_row_is_rejected_with_its_reason(tmp_path):
    body = HEADER + "\n".join(
        [
            "2020-01-02,AAA,10,11,9,10.5,10.4,1000",  # good
            "2020-01-03,AAA,10,11,9,,10.4,1000",  # missing close
            "2020-01-06,AAA,0,11,9,10.5,10.4,1000",  # non-positive open
            "2020-01-07,AAA,10,8,9,8.5,8.4,1000",  # high below low
            "2020-01-08,AAA,10,10.2,9,10.5,10.4,1000",  # high under close
            "2020-01-09,AAA,10,11,9,10.5,10.4,-5",  # negative volume
            "2020-13-45,AAA,10,11,9,10.5,10.4,1000",  # unparseable date
            "2020-01-10,AAA,10,11,9,ten,10.4,1000",  # non-numeric close
            "2020-01-13,AAA,10,11,9,10.5,10.4,1000",  # duplicate, conflicting -> both rejected
            "2020-01-13,AAA,10,11,9,10.6,10.5,1000",
            "2020-01-14,BBB,20,21,19,20.5,20.5,0",  # good, zero volume is allowed
            "2020-01-14,BBB,20,21,19,20.5,20.5,0",  # exact duplicate -> the copy is rejected
            "2099-01-02,BBB,20,21,19,20.5,20.5,10",  # future date
            "2020-01-15,,20,21,19,20.5,20.5,10",  # missing ticker
        ]
    )
    parsed = read_price_file(write(tmp_path, "mixed.csv", body), today=date(2026, 1, 1))
    assert parsed.rows_read == 14
    assert len(parsed.bars) == 2
    assert parsed.rejected_by_reason == {
        "date_in_future": 1,
        "duplicate_ticker_date": 3,
        "high_below_low": 1,
        "high_low_not_bracketing": 1,
        "missing_price": 1,
        "missing_ticker": 1,
        "negative_volume": 1,
        "non_numeric_close": 1,
        "non_positive_price": 1,
        "unparseable_date": 1,
    }
    assert len(parsed.rejected) + len(parsed.bars) == parsed.rows_read  # nothing silently dropped
    lines = dict(zip(parsed.rejected["line"], parsed.rejected["reason"], strict=True))
    assert lines[3] == "missing_price" and lines[8] == "unparseable_date"


def test_columns_match_case_insensitively_and_adj_close_defaults_to_close(tmp_path):
    path = write(tmp_path, "x.csv", "TIMESTAMP,OPEN,HIGH,LOW,CLOSE,VOLUME,TICKER\n2021-03-01,1,2,0.5,1.5,100,zzz\n")
    parsed = read_price_file(path)
    assert parsed.tickers == ["ZZZ"]
    assert parsed.bars.loc[0, "adj_close"] == 1.5


def test_missing_required_column_names_it(tmp_path):
    path = write(tmp_path, "x.csv", "date,ticker,open,high,close,volume\n2021-03-01,A,1,2,1.5,100\n")
    with pytest.raises(PriceFileError, match="missing required column.*low"):
        read_price_file(path)


def test_one_file_per_ticker_takes_the_ticker_from_the_name(tmp_path):
    path = write(tmp_path, "MSFT.csv", "date,open,high,low,close,volume\n2021-03-01,1,2,0.5,1.5,100\n")
    assert read_price_file(path).tickers == ["MSFT"]
    nameless = write(tmp_path, "prices of 2021.csv", "date,open,high,low,close,volume\n2021-03-01,1,2,0.5,1.5,100\n")
    with pytest.raises(PriceFileError, match="no ticker"):
        read_price_file(nameless)


def test_raw_alpha_vantage_file_is_split_adjusted():
    parsed = read_price_file(RAW_AAPL)
    raw = pd.read_csv(RAW_AAPL)
    assert parsed.tickers == ["AAPL"] and parsed.rows_read == len(raw) and len(parsed.bars) == len(raw)
    bars = parsed.bars.set_index("date")
    splits = parsed.actions[parsed.actions["kind"] == "split"]
    assert [str(d) for d in splits["date"]] == ["2000-06-21", "2005-02-28", "2014-06-09", "2020-08-31"]
    assert len(parsed.actions[parsed.actions["kind"] == "dividend"]) > 30
    # Around the 4:1 split of 2020-08-31 the adjusted close moves like the market, not by -75%.
    before, after = bars.loc[date(2020, 8, 28), "close"], bars.loc[date(2020, 8, 31), "close"]
    assert 0.9 < after / before < 1.1
    raw_before = raw.loc[raw["timestamp"] == "2020-08-28", "close"].item()
    assert before == pytest.approx(raw_before / 4)
    # Cumulative factor 2*2*7*4 = 112 before the 2000 split; volume scales the other way.
    first = raw.iloc[0]
    assert bars.iloc[0]["close"] == pytest.approx(first["close"] / 112, rel=1e-5)
    assert bars.iloc[0]["volume"] == pytest.approx(first["volume"] * 112, rel=1e-5)
    assert np.all(bars["high"] >= bars["low"])


def test_parquet_is_read(tmp_path):
    frame = pd.DataFrame(
        {"date": ["2021-03-01", "2021-03-02"], "ticker": ["A", "A"], "open": [1.0, 1.1], "high": [2.0, 2.0],
         "low": [0.5, 0.5], "close": [1.5, 1.6], "adj_close": [1.4, 1.5], "volume": [10, 20]}
    )
    path = tmp_path / "bars.parquet"
    frame.to_parquet(path)
    parsed = read_price_file(path)
    assert len(parsed.bars) == 2 and parsed.rejected.empty
