"""The today-so-far bar's rules (features.intraday) and Polygon's snapshot parsing, without Django."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pandas as pd

from features.intraday import TodayBar, close_of, merge_bar, merge_trade, session_of
from features.providers.polygon import _snapshot_frame

NY = ZoneInfo("America/New_York")


def at(hour: int, minute: int, day: int = 21) -> datetime:
    return datetime(2018, 5, day, hour, minute, tzinfo=NY).astimezone(UTC)


def test_trades_build_the_session_bar_whatever_order_they_arrive_in():
    bar = merge_trade(None, ticker="AAPL", price=10.0, size=100, time=at(9, 31), source="push")
    assert (bar.session, bar.open, bar.high, bar.low, bar.close, bar.volume) == (date(2018, 5, 21), 10, 10, 10, 10, 100)
    bar = merge_trade(bar, ticker="AAPL", price=9.0, size=50, time=at(10, 0), source="push")
    late = merge_trade(bar, ticker="AAPL", price=12.0, size=10, time=at(9, 45), source="push")  # older: not the close
    assert (late.high, late.low, late.close, late.volume, late.time) == (12.0, 9.0, 9.0, 160, at(10, 0))
    assert merge_trade(late, ticker="AAPL", price=1.0, size=1, time=at(15, 0, day=18), source="push") == late
    tuesday = merge_trade(late, ticker="AAPL", price=11.0, size=5, time=at(9, 30, day=22), source="push")
    assert (tuesday.session, tuesday.open, tuesday.volume) == (date(2018, 5, 22), 11.0, 5)


def test_a_snapshot_replaces_only_an_older_bar():
    old = TodayBar("AAPL", date(2018, 5, 21), 10, 11, 9, 10.5, 1000, at(10, 0), "polygon")
    new = TodayBar("AAPL", date(2018, 5, 21), 10, 11.5, 9, 11.2, 1500, at(10, 1), "polygon")
    assert merge_bar(old, new) == new and merge_bar(new, old) == new
    assert TodayBar.from_dict(new.as_dict()) == new


def test_sessions_are_new_york_days_and_a_day_is_known_at_its_close():
    assert session_of(datetime(2018, 5, 22, 2, 0, tzinfo=UTC)) == date(2018, 5, 21)  # 22:00 New York
    assert close_of(date(2018, 5, 18)) == datetime(2018, 5, 18, 20, 0, tzinfo=UTC)  # EDT
    assert close_of(date(2018, 1, 5)) == datetime(2018, 1, 5, 21, 0, tzinfo=UTC)  # EST


def test_polygon_snapshot_items_become_rows():
    ns = int(pd.Timestamp(at(10, 30)).value)
    frame = _snapshot_frame([
        {"ticker": "AAPL", "day": {"o": 10, "h": 11, "l": 9.5, "c": 10.8, "v": 1200},
         "lastTrade": {"p": 10.9, "s": 100, "t": ns}, "updated": ns + 5},
        # before the day's first print Polygon writes zeros; no last trade: the snapshot's time
        {"ticker": "BRK-B", "day": {"o": 0, "h": 0, "l": 0, "c": 0, "v": 0}, "updated": ns},
        {"day": {"o": 1}},  # no ticker: dropped
        "junk",
    ])
    assert list(frame["ticker"]) == ["AAPL", "BRK.B"]
    aapl, brk = frame.iloc[0], frame.iloc[1]
    assert aapl["price"] == 10.9 and aapl["open"] == 10 and aapl["time"] == pd.Timestamp(at(10, 30))
    assert math.isnan(brk["open"]) and math.isnan(brk["price"]) and brk["time"] == pd.Timestamp(at(10, 30))
