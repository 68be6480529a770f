"""Symbol-directory parsing (nasdaqlisted.txt / otherlisted.txt, real format)."""

from __future__ import annotations

import gzip
from datetime import datetime

import pytest

from features.universe import (
    UNIVERSE_COLUMNS,
    file_creation_time,
    load_universe,
    parse_symbol_directory,
    read_nasdaq_listed,
    read_other_listed,
)

NASDAQ_LISTED = """\
Symbol|Security Name|Market Category|Test Issue|Financial Status|Round Lot Size|ETF|NextShares
AAPL|Apple Inc. - Common Stock|Q|N|N|100|N|N
ACAHW|Atlantic Coastal Acquisition Corp. - Warrant|S|N|D|100|N|N
MSFT|Microsoft Corporation - Common Stock|Q|N|N|100|N|N
NA|Nano Labs Ltd - Class A Ordinary Shares|S|N|N|100|N|N
QQQ|Invesco QQQ Trust, Series 1|G|N|N|100|Y|N
ZJZZT|NASDAQ TEST STOCK|G|Y|N|100|N|N
ZXZZT|NASDAQ TEST STOCK|G|Y|N|100|N|N
File Creation Time: 0628202421:32|||||||
"""

OTHER_LISTED = """\
ACT Symbol|Security Name|Exchange|CQS Symbol|ETF|Round Lot Size|Test Issue|NASDAQ Symbol
A|Agilent Technologies, Inc. Common Stock|N|A|N|100|N|A
ABR$D|Arbor Realty Trust 6.375% Series D Cumulative Redeemable Preferred Stock|N|ABRpD|N|100|N|ABR-D
BRK.B|Berkshire Hathaway Inc. New Common Stock|N|BRK.B|N|100|N|BRK.B
CVR|Chicago Rivet & Machine Co. Common Stock|A|CVR|N|100|N|CVR
SPY|SPDR S&P 500 ETF Trust|P|SPY|Y|100|N|SPY
CBOE1|Some Cboe BZX listing|Z|CBOE1|N|100|N|CBOE1
IEXX|An IEX listing|V|IEXX|N|100|N|IEXX
ATEST|NYSE TEST STOCK|N|ATEST|N|100|Y|ATEST
ZVV|NYSE Arca test|P|ZVV|Y|100|Y|ZVV
File Creation Time: 0628202421:32|||||||
"""


def test_nasdaq_listed():
    df = read_nasdaq_listed(NASDAQ_LISTED)
    assert list(df.columns) == UNIVERSE_COLUMNS
    assert list(df["symbol"]) == ["AAPL", "ACAHW", "MSFT", "NA", "QQQ"]  # test issues dropped, "NA" kept
    assert set(df["exchange"]) == {"NASDAQ"}
    assert df.set_index("symbol")["is_etf"].to_dict() == {
        "AAPL": False, "ACAHW": False, "MSFT": False, "NA": False, "QQQ": True}
    assert df.attrs["created"] == datetime(2024, 6, 28, 21, 32)
    assert df["is_etf"].dtype == bool


def test_other_listed_exchange_codes():
    df = read_other_listed(OTHER_LISTED)
    exchanges = df.set_index("symbol")["exchange"].to_dict()
    assert exchanges == {"A": "NYSE", "ABR$D": "NYSE", "BRK.B": "NYSE", "CVR": "AMEX", "SPY": "OTHER",
                         "CBOE1": "OTHER", "IEXX": "OTHER"}
    assert "ATEST" not in exchanges and "ZVV" not in exchanges
    assert df.set_index("symbol").loc["SPY", "is_etf"]
    assert df.loc[df["symbol"] == "A", "name"].item() == "Agilent Technologies, Inc. Common Stock"


def test_files_from_disk_gzip_and_autodetect(tmp_path):
    (tmp_path / "nasdaqlisted.txt").write_text(NASDAQ_LISTED.replace("\n", "\r\n"))
    (tmp_path / "otherlisted.txt.gz").write_bytes(gzip.compress(OTHER_LISTED.encode()))
    nasdaq = parse_symbol_directory(tmp_path / "nasdaqlisted.txt")
    other = parse_symbol_directory(tmp_path / "otherlisted.txt.gz")
    assert len(nasdaq) == 5 and len(other) == 7
    universe = load_universe([tmp_path / "nasdaqlisted.txt", str(tmp_path / "otherlisted.txt.gz")])
    assert set(universe["exchange"]) == {"NYSE", "NASDAQ", "AMEX"}
    assert "SPY" not in set(universe["symbol"])  # NYSE Arca -> OTHER, filtered by default
    assert universe["symbol"].is_unique and universe["symbol"].is_monotonic_increasing
    assert universe.attrs["created"] == datetime(2024, 6, 28, 21, 32)


def test_universe_filters():
    everything = load_universe([NASDAQ_LISTED, OTHER_LISTED], exchanges=None)
    assert {"SPY", "CBOE1", "IEXX"} <= set(everything["symbol"])
    stocks = load_universe([NASDAQ_LISTED, OTHER_LISTED], include_etfs=False, common_only=True)
    assert list(stocks["symbol"]) == ["A", "AAPL", "BRK.B", "CVR", "MSFT", "NA"]


def test_bad_files_are_rejected():
    with pytest.raises(ValueError, match="header"):
        parse_symbol_directory("Ticker|Name\nAAPL|Apple\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_other_listed("Symbol|Security Name\nAAPL|Apple\n")
    assert file_creation_time("no trailer\n") is None
    assert load_universe([]).empty
