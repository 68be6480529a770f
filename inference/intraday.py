"""``POST /predict`` by ticker during a session: the features of the "today so far" bar.

``plan_for`` decides, per request, between the end-of-day prediction (the ticker's stored features)
and an intraday one, and says why (``intraday_reason``):

* ``disabled``: ``ML_INTRADAY_ENABLED`` is off;
* ``no_quote``: no bar in the online store (``inference.quotes``);
* ``session_in_store``: the bar's session is not after the stored features' date (the daily update
  already stored that session's final bar);
* ``quote_stale``: its latest trade is older than ``ML_INTRADAY_QUOTE_MAX_AGE_SECONDS`` (900);
* ``features_behind``: the stored features stop before the session's previous trading day (a
  missed daily update): one more row would not be the next bar;
* ``normalized_feature_set``: the feature set normalizes each date across the universe, which a
  single ticker's partial session cannot do;
* ``window_unavailable``: the ticker's engine inputs could not be read (logged).

Intraday, the feature engine computes one more row on the ticker's engine window (its last
``max_lookback`` bars, fundamentals, news known at the bar's time and the stored market series;
``features.intraday``), kept per worker for ``ML_INTRADAY_WINDOW_SECONDS`` so a request recomputes
one ticker's row only. The models see that row as the latest (the LSTM: after the stored history),
``feature_date`` is the session, ``as_of`` the bar's time, ``reference_price`` its price. Today's
market return (beta, correlation, relative return) comes from a fresh bar of
``ML_INTRADAY_MARKET_SYMBOL`` (SPY) when there is one, else it is unknown, as any missing market day.
The row is never stored.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from django.utils import timezone

from features.intraday import EngineWindow, TodayBar, close_of, intraday_features
from features.models import FeatureSetVersion, PriceBar
from features.services.build_inputs import engine_window
from features.trading_calendar import is_trading_day
from inference import conf
from inference.exceptions import ModelUnavailable
from inference.inputs import OnlineSource
from inference.quotes import today_bars

logger = logging.getLogger(__name__)

DISABLED = "disabled"
NO_QUOTE = "no_quote"
SESSION_IN_STORE = "session_in_store"
QUOTE_STALE = "quote_stale"
FEATURES_BEHIND = "features_behind"
NORMALIZED = "normalized_feature_set"
WINDOW_UNAVAILABLE = "window_unavailable"
FEATURE_VECTOR = "feature_vector"  # a request with features, not a ticker
REASONS = (DISABLED, NO_QUOTE, SESSION_IN_STORE, QUOTE_STALE, FEATURES_BEHIND, NORMALIZED, WINDOW_UNAVAILABLE,
           FEATURE_VECTOR)


def now() -> datetime:
    """The clock the staleness check reads (tests set it)."""
    return timezone.now()


# --------------------------------------------------------------------------------------------------
# per-worker caches: engine windows (LRU, refreshed after ML_INTRADAY_WINDOW_SECONDS), versions


class _Windows:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: OrderedDict[tuple, tuple[float, EngineWindow]] = OrderedDict()
        self._versions: dict[int, Any] = {}

    def version(self, version_id: int) -> Any:
        found = self._versions.get(version_id)
        if found is None:
            found = self._versions[version_id] = FeatureSetVersion.objects.select_related("feature_set").get(
                pk=version_id)
        return found

    def get(self, *, version_id: int, ticker: str, feature_date: date) -> EngineWindow:
        key = (version_id, ticker, feature_date)
        with self._lock:
            found = self._data.get(key)
            if found is not None and time.monotonic() - found[0] < conf.intraday_window_seconds():
                self._data.move_to_end(key)
                return found[1]

        window = engine_window(version=self.version(version_id), ticker=ticker, feature_date=feature_date)
        size = conf.intraday_window_cache_size()
        with self._lock:
            if size > 0:
                self._data[key] = (time.monotonic(), window)
                self._data.move_to_end(key)
                while len(self._data) > size:
                    self._data.popitem(last=False)
        return window

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._versions.clear()
            _CLOSES.clear()


WINDOWS = _Windows()


def clear_caches() -> None:
    """Forget the engine windows and versions this worker keeps (tests)."""
    WINDOWS.clear()


def _previous_session(day: date) -> date:
    day -= timedelta(days=1)
    while not is_trading_day(day):
        day -= timedelta(days=1)
    return day


# --------------------------------------------------------------------------------------------------


class IntradaySource(OnlineSource):
    """The ticker's partial-session row as its latest (an ``OnlineSource`` of one ticker: the
    end-of-day source gives the stored history before it)."""

    def __init__(self, eod: OnlineSource, bar: TodayBar, *, market_return: float | None):
        super().__init__(eod.tickers, field=eod.field)
        self.eod = eod
        self.bar = bar
        self.market_return = market_return
        self._rows: dict[int | None, tuple[list[str], np.ndarray]] = {}

    def window(self, fsv_id: int | None) -> EngineWindow:
        vector = self.eod.vectors(fsv_id)[0]
        return WINDOWS.get(version_id=vector.version_id, ticker=self.bar.ticker, feature_date=vector.date)

    def row(self, fsv_id: int | None) -> tuple[list[str], np.ndarray]:
        """(columns, values) of the partial session in feature-set version ``fsv_id`` (computed once)."""
        if fsv_id not in self._rows:
            window = self.window(fsv_id)
            self._rows[fsv_id] = (window.columns, intraday_features(window, self.bar, market_return=self.market_return))
        return self._rows[fsv_id]

    def feature_dates(self, fsv_id: int | None) -> list[date]:
        return [self.bar.session]

    def reference_prices(self, fsv_id: int | None) -> list[float | None]:
        """The bar's price on the stored history's adjusted scale (no engine run: a cached answer
        needs only this)."""
        return [self.bar.close * self.window(fsv_id).adjustment]

    def latest(self, fsv_id: int | None, columns: list[str]) -> pd.DataFrame:
        if fsv_id in self._latest:
            return self._latest[fsv_id]
        names, values = self.row(fsv_id)
        price = self.reference_prices(fsv_id)[0]
        frame = pd.DataFrame(values.reshape(1, -1), columns=names, copy=False)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ModelUnavailable(f"the feature engine lacks columns the model needs: {missing[:5]}")
        frame["ticker"] = self.tickers
        frame["date"] = pd.to_datetime([self.bar.session])
        frame["adj_close"] = price
        self._latest[fsv_id] = frame
        return frame

    def history(self, fsv_id: int | None, columns: list[str], length: int) -> tuple[pd.DataFrame, np.ndarray]:
        stored, _ = self.eod.history(fsv_id, columns, length)  # the last ``length`` stored rows
        if len(stored) >= length:
            stored = stored.iloc[1:]
        today = self.latest(fsv_id, columns)[list(stored.columns)]
        frame = pd.concat([stored, today], ignore_index=True)
        return frame, np.asarray([len(frame) - 1], dtype=np.int64)


@dataclass
class Plan:
    """What ``POST /predict`` by ticker serves: intraday (``source``, ``input_hash``...) or not (``reason``)."""

    intraday: bool
    reason: str | None
    as_of: datetime | None
    source: Any = None
    input_hash: str = ""
    session: date | None = None
    reference_price: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        return {"as_of": self.as_of, "intraday": self.intraday, "intraday_reason": self.reason}


def _input_hash(*, bar: TodayBar, version_id: int, feature_date: date, market_return: float | None) -> str:
    """sha256 of everything the partial row depends on: the bar, the stored features it follows and
    today's market return (news are read as of the bar's time, which the hash holds)."""
    text = (f"i1:{bar.ticker}:{bar.session}:{bar.time.isoformat()}:{bar.open!r}:{bar.high!r}:{bar.low!r}:"
            f"{bar.close!r}:{bar.volume!r}:{version_id}:{feature_date}:{market_return!r}")
    return hashlib.sha256(text.encode()).hexdigest()


def _market_return(bar: TodayBar, market: TodayBar | None, *, clock: datetime) -> float | None:
    """Today's market return from a fresh bar of the market symbol of the same session, against its
    close of the session before (None: unknown)."""
    if market is None or market.session != bar.session:
        return None
    if (clock - market.time).total_seconds() > conf.intraday_quote_max_age():
        return None
    close = _stored_close(market.ticker, _previous_session(bar.session))
    if close is None or not close > 0:
        return None
    value = market.close / close - 1.0
    return value if math.isfinite(value) else None


_CLOSES: dict[tuple[str, date], float | None] = {}  # a stored day's close does not change


def _stored_close(ticker: str, day: date) -> float | None:
    key = (ticker, day)
    if key not in _CLOSES:
        close = PriceBar.objects.filter(ticker__symbol=ticker, date=day).values_list("close", flat=True).first()
        if close is None:
            return None  # not remembered: the bar may still come
        if len(_CLOSES) > 10_000:
            _CLOSES.clear()
        _CLOSES[key] = float(close)
    return _CLOSES[key]


def plan_for(*, served: Any, ticker: str, source: OnlineSource, feature_date: date) -> Plan:
    """Intraday or end-of-day for ``ticker`` (``source``: its end-of-day source; ``feature_date``: its
    stored features' date). See the module docstring for the reasons."""
    eod_as_of = close_of(feature_date)
    if not conf.intraday_enabled():
        return Plan(False, DISABLED, eod_as_of)
    market_symbol = conf.intraday_market_symbol()
    bars = today_bars(tickers=[ticker, market_symbol])
    bar = bars.get(ticker)
    if bar is None:
        return Plan(False, NO_QUOTE, eod_as_of)
    if bar.session <= feature_date:
        return Plan(False, SESSION_IN_STORE, eod_as_of)
    clock = now()
    if (clock - bar.time).total_seconds() > conf.intraday_quote_max_age():
        return Plan(False, QUOTE_STALE, eod_as_of, details={"quote_time": bar.time})
    if _previous_session(bar.session) != feature_date:
        return Plan(False, FEATURES_BEHIND, eod_as_of)
    vector = source.vectors(served.feature_set_version_id)[0]
    version = WINDOWS.version(vector.version_id)
    if (version.params or {}).get("cs_normalization", "none") != "none":
        return Plan(False, NORMALIZED, eod_as_of)
    market_return = _market_return(bar, bars.get(market_symbol), clock=clock)
    intraday = IntradaySource(source, bar, market_return=market_return)
    try:
        price = intraday.reference_prices(served.feature_set_version_id)[0]
    except Exception:  # noqa: BLE001 - the end-of-day answer is still right; say why it is not intraday
        logger.exception("intraday features of %s could not be computed; serving end of day", ticker)
        return Plan(False, WINDOW_UNAVAILABLE, eod_as_of)
    return Plan(
        True, None, bar.time, source=intraday, session=bar.session, reference_price=price,
        input_hash=_input_hash(bar=bar, version_id=vector.version_id, feature_date=feature_date,
                               market_return=market_return),
        details={"market_return": market_return},
    )
