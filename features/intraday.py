"""The "today so far" bar of a ticker and the features of a session that has not closed.
Framework-free (no Django): the API's online store keeps the bars, ``inference.intraday`` serves them.

* ``TodayBar``: open, high, low, close and volume of one ticker's session so far, with the time of the
  latest trade or quote in it. A snapshot (a provider's day bar, or a pushed bar) replaces an older
  one; a trade is merged into the bar of its session (``merge_trade``).
* ``EngineWindow``: what the feature engine needs to compute a ticker's next row, as the feature-store
  build passes it: the last ``max_lookback`` stored bars (the engine is exact from that many, see
  ``features.engine``), the fundamentals snapshots, the news scores and the market series the store
  was built with (and the social posts, for a feature set with social columns). ``intraday_features``
  appends the partial bar as one more row and runs the same
  engine (``compute_features_incremental``, float32 as stored): the row is the partial session's
  features. Nothing is written anywhere.

Point in time: the partial row uses only what was known at ``as_of`` (the bar's time): news and
posts published after it are left out, fundamentals count from the day after their ``as_of`` as in the build, and
today's market return is the caller's (unknown, NaN, unless a market quote gives it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd

from features.engine import compute_features_incremental
from features.feature_sets import FeatureSpec
from features.sentiment import aggregate_daily
from features.social import aggregate_social_daily
from features.store_format import STORE_DTYPE
from features.trading_calendar import MARKET_TZ

CLOSE_HOUR = 16  # the regular session's close, New York time


def session_of(moment: datetime) -> date:
    """The New York calendar day of an aware ``moment`` (the session a trade belongs to)."""
    return moment.astimezone(MARKET_TZ).date()


def close_of(day: date) -> datetime:
    """16:00 New York on ``day``, in UTC: when a day's bar, and the features of that day, are known."""
    return datetime(day.year, day.month, day.day, CLOSE_HOUR, tzinfo=MARKET_TZ).astimezone(UTC)


@dataclass(frozen=True)
class TodayBar:
    ticker: str
    session: date
    open: float
    high: float
    low: float
    close: float
    volume: float
    time: datetime  # the latest trade or quote in the bar (aware, UTC)
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["session"] = self.session.isoformat()
        out["time"] = self.time.astimezone(UTC).isoformat()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TodayBar:
        return cls(
            ticker=str(data["ticker"]), session=date.fromisoformat(data["session"]),
            open=float(data["open"]), high=float(data["high"]), low=float(data["low"]),
            close=float(data["close"]), volume=float(data["volume"]),
            time=datetime.fromisoformat(data["time"]), source=str(data.get("source", "")),
        )


def merge_trade(bar: TodayBar | None, *, ticker: str, price: float, size: float, time: datetime,
                source: str) -> TodayBar:
    """``bar`` with one trade added: a trade of a later session starts a new bar; within the
    session it extends high and low and adds its size to the volume; it moves the close (and the
    bar's time) only when it is the latest trade. A trade of an earlier session than ``bar``'s
    changes nothing."""
    session = session_of(time)
    if bar is None or session > bar.session:
        return TodayBar(ticker, session, price, price, price, price, size, time, source)
    if session < bar.session:
        return bar
    latest = time >= bar.time
    return TodayBar(
        ticker, session, bar.open, max(bar.high, price), min(bar.low, price),
        price if latest else bar.close, bar.volume + size, time if latest else bar.time, source,
    )


def merge_bar(bar: TodayBar | None, new: TodayBar) -> TodayBar:
    """A snapshot of the session so far replaces an older bar; an older snapshot is ignored."""
    if bar is None or (new.session, new.time) >= (bar.session, bar.time):
        return new
    return bar


# --------------------------------------------------------------------------------------------------


@dataclass
class EngineWindow:
    """One ticker's engine inputs up to its last stored feature date (see the module docstring)."""

    ticker: str
    spec: FeatureSpec
    feature_date: date
    bars: pd.DataFrame  # ticker, date, open, high, low, close, adj_close, volume; the last is feature_date's
    fundamentals: pd.DataFrame | None  # ticker, as_of, pe_ratio, eps, market_cap, dividend_yield
    sentiment: pd.DataFrame  # daily ticker, date, score, count of the news published up to feature_date's close
    news_after: pd.DataFrame  # published_at (UTC), score: news published after that close
    market: pd.Series  # the stored market returns (index: dates)
    columns: list[str] = field(default_factory=list)
    # a feature set with social columns: daily posts up to feature_date's close, and the raw posts after
    # it (ticker, posted_at UTC, score, label); None otherwise, as the build passes them
    social: pd.DataFrame | None = None
    posts_after: pd.DataFrame | None = None

    @property
    def last_close(self) -> float:
        return float(self.bars["close"].iloc[-1])

    @property
    def last_adj_close(self) -> float:
        return float(self.bars["adj_close"].iloc[-1])

    @property
    def adjustment(self) -> float:
        """adj_close / close of the last stored bar: today's prices get the same factor, so the
        adjusted series continues without a jump whatever convention the stored bars follow."""
        close, adj = self.last_close, self.last_adj_close
        return adj / close if close > 0 and math.isfinite(adj / close) and adj > 0 else 1.0


def _news_until(window: EngineWindow, as_of: datetime) -> pd.DataFrame:
    news = window.news_after
    if news.empty:
        return window.sentiment
    known = news.loc[news["published_at"] <= pd.Timestamp(as_of)]
    if known.empty:
        return window.sentiment
    today = aggregate_daily(known.assign(ticker=window.ticker), time_col="published_at")
    return pd.concat([window.sentiment, today], ignore_index=True)


def _posts_until(window: EngineWindow, as_of: datetime) -> pd.DataFrame | None:
    posts = window.posts_after
    if window.social is None or posts is None or posts.empty:
        return window.social
    known = posts.loc[posts["posted_at"] <= pd.Timestamp(as_of)]
    if known.empty:
        return window.social
    return pd.concat([window.social, aggregate_social_daily(known)], ignore_index=True)


def intraday_features(window: EngineWindow, bar: TodayBar, *, market_return: float | None = None) -> np.ndarray:
    """The engine's row for ``bar`` appended to ``window`` (float64 values of float32 features, in
    ``window.columns`` order). ``market_return``: today's market return so far, None when unknown."""
    if bar.session <= window.feature_date:
        raise ValueError(f"{bar.ticker}: the bar of {bar.session} is not after the stored {window.feature_date}")
    factor = window.adjustment
    today = pd.Timestamp(bar.session)
    row = pd.DataFrame({
        "ticker": [window.ticker], "date": [today], "open": [bar.open], "high": [bar.high], "low": [bar.low],
        "close": [bar.close], "adj_close": [bar.close * factor], "volume": [bar.volume],
    })
    bars = pd.concat([window.bars, row], ignore_index=True)
    market = window.market
    if market_return is not None and math.isfinite(market_return):
        market = pd.concat([market, pd.Series([float(market_return)], index=pd.DatetimeIndex([today]))])
    frame = compute_features_incremental(
        bars, today, market_returns=market, fundamentals=window.fundamentals,
        sentiment=_news_until(window, bar.time), social=_posts_until(window, bar.time), params=window.spec,
        dtype=STORE_DTYPE,
    )
    if len(frame) != 1:  # pragma: no cover - one bar in, one row out
        raise RuntimeError(f"{bar.ticker}: the engine returned {len(frame)} rows for one partial bar")
    columns = window.columns or window.spec.columns()
    return frame[columns].to_numpy(dtype=np.float64)[0]
