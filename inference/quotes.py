"""Intraday quotes: each ticker's "today so far" bar (``features.intraday.TodayBar``) in the online
store, the Django cache every worker shares (Redis, or the disk cache in the embedded mode).

Two feeds write it: ``POST /quotes`` (``quotes_push``: a user's own feed of trades or bars) and the
provider's snapshot (``quotes_poll``: the ``inference.poll_quotes`` task during market hours when
``ML_INTRADAY_POLL_ENABLED``, or ``manage.py poll_quotes``). ``POST /predict`` by ticker reads it
(``inference.intraday``). Nothing here writes the price table or the offline feature store: the
session's final bar comes from the daily update as always.

A trade (``{ticker, price, volume?, time}``) is merged into the bar of its session (high, low,
volume; the close when it is the latest); a bar (``{ticker, open, high, low, close, volume, time}``,
what a snapshot gives: the session so far, cumulative volume) replaces an older one. Updates of a
ticker are serialized by a short lock in the cache, so concurrent pushes never lose a trade. A
request is checked as a whole before anything is stored: one bad quote and none is kept.
"""

from __future__ import annotations

import logging
import math
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from typing import Any

import pandas as pd
from django.core.cache import cache
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from features.intraday import MARKET_TZ, TodayBar, merge_bar, merge_trade, session_of
from features.models import PriceBar, Ticker
from features.services.intraday_quotes import fetch_quotes
from features.trading_calendar import is_trading_day
from inference import conf
from inference.exceptions import InvalidInput, ModelUnavailable, PayloadTooLarge

logger = logging.getLogger(__name__)

BAR_PREFIX = "inference:intraday:bar"
LOCK_PREFIX = "inference:intraday:lock"
BAR_TTL_SECONDS = 4 * 86_400  # a bar outlives its session by a weekend; the daily bar replaces it anyway
LOCK_SECONDS = 10
LOCK_WAIT_SECONDS = 3.0
MAX_PRICE = 1e12
MAX_VOLUME = 1e15
TRADE_FIELDS = ("price", "volume")
BAR_FIELDS = ("open", "high", "low", "close", "volume")
KNOWN_FIELDS = {"ticker", "time", "price", "open", "high", "low", "close", "volume"}
TICKER_RE = re.compile(r"^[A-Z0-9][A-Z0-9.\-]{0,15}$")  # as inference.services.normalize_ticker


def bar_key(ticker: str) -> str:
    return f"{BAR_PREFIX}:{ticker}"


def today_bars(*, tickers: Iterable[str]) -> dict[str, TodayBar]:
    """The stored bars of ``tickers`` (those that have one), in one cache round trip."""
    symbols = list(dict.fromkeys(tickers))
    if not symbols:
        return {}
    raw = cache.get_many([bar_key(s) for s in symbols])
    out = {}
    for symbol in symbols:
        value = raw.get(bar_key(symbol))
        if isinstance(value, dict):
            try:
                out[symbol] = TodayBar.from_dict(value)
            except (KeyError, TypeError, ValueError):  # a value of an older layout: as if absent
                logger.warning("unreadable intraday bar of %s ignored", symbol)
    return out


@contextmanager
def _locked(tickers: list[str]) -> Iterator[None]:
    """Hold every ticker's update lock (taken in sorted order: two requests never wait on each other)."""
    token = uuid.uuid4().hex
    held: list[str] = []
    try:
        for symbol in sorted(set(tickers)):
            key = f"{LOCK_PREFIX}:{symbol}"
            deadline = time.monotonic() + LOCK_WAIT_SECONDS
            while not cache.add(key, token, timeout=LOCK_SECONDS):
                if time.monotonic() > deadline:
                    raise ModelUnavailable(f"the intraday bar of {symbol} is being updated by another request; "
                                           "retry", field="quotes")
                time.sleep(0.005)
            held.append(key)
        yield
    finally:
        for key in held:
            if cache.get(key) == token:  # never release a lock that expired and was taken by another
                cache.delete(key)


def _store(updates: dict[str, list[Any]]) -> dict[str, TodayBar]:
    """Apply each ticker's updates (TodayBar: replace if newer; dict: a trade) in order, under its lock."""
    with _locked(list(updates)):
        bars = today_bars(tickers=updates)
        for symbol, items in updates.items():
            bar = bars.get(symbol)
            for item in items:
                if isinstance(item, TodayBar):
                    bar = merge_bar(bar, item)
                else:
                    bar = merge_trade(bar, ticker=symbol, **item)
            bars[symbol] = bar
        stored = {s: bars[s] for s in updates}
        cache.set_many({bar_key(s): b.as_dict() for s, b in stored.items()}, timeout=BAR_TTL_SECONDS)
    return stored


# --------------------------------------------------------------------------------------------------
# checks (no database: types, ranges, the time; then, for the request as a whole, the universe)


class QuoteErrors(InvalidInput):
    """Every bad field of a ``POST /quotes`` body at once (400)."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        detail = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in errors.items())
        super().__init__(detail, field=next(iter(errors)))

    def as_dict(self) -> dict:
        return {"detail": self.message, "errors": self.errors}


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str):
        return f"a string ({value[:20]!r})"
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity"
    return repr(value) if isinstance(value, int | float) else type(value).__name__


def _number(value: Any, *, minimum: float, maximum: float, strict: bool) -> float:
    """A JSON number in range (``strict``: > minimum), else ValueError with the message."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    try:
        number = float(value) if ok else math.nan
    except OverflowError:
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, got {_describe(value)}")
    if number < minimum or (strict and number == minimum) or number > maximum:
        low = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ValueError(f"must be {low} and <= {maximum:g}, got {_describe(value)}")
    return number


def _time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"must be an ISO 8601 time with a UTC offset, got {_describe(value)}")
    try:
        parsed = datetime.fromisoformat(value.strip())
        if parsed.tzinfo is None:
            raise ValueError(f"{value[:40]!r} has no UTC offset (send e.g. 2024-06-10T10:31:07-04:00 or ...Z)")
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        message = str(exc) if "UTC offset" in str(exc) else f"{value[:40]!r} is not an ISO 8601 time"
        raise ValueError(message) from None


def _check_item(i: int, item: Any, errors: dict[str, list[str]], *, now: datetime) -> dict[str, Any] | None:
    where = f"quotes[{i}]"

    def fail(field: str | None, message: str) -> None:
        errors.setdefault(f"{where}.{field}" if field else where, []).append(message)

    if not isinstance(item, dict):
        fail(None, f"expected an object with ticker, time and price (a trade) or open, high, low, close "
                   f"and volume (a bar), got {_describe(item)}")
        return None
    raw_ticker = item.get("ticker")
    ticker = raw_ticker.strip().upper() if isinstance(raw_ticker, str) else ""
    is_symbol = TICKER_RE.match(ticker) is not None
    if "ticker" not in item:
        fail("ticker", "This field is required.")
    elif not is_symbol:
        fail("ticker", f"{_describe(raw_ticker)} is not a ticker symbol (1-16 letters, digits, '.' or '-')")
    label = ticker or where
    unknown = sorted(str(k) for k in item if k not in KNOWN_FIELDS)
    if unknown:
        fail(None, f"{label}: unknown field(s) {', '.join(unknown)[:200]} (a quote has ticker, time and price "
                   "[, volume], or ticker, time, open, high, low, close and volume)")
    # a symbol that is no ticker goes no further than its error (never into a query: PostgreSQL
    # refuses text with a NUL byte)
    out: dict[str, Any] = {"ticker": ticker if is_symbol else ""}
    if "time" not in item:
        fail("time", f"{label}: This field is required.")
    else:
        try:
            moment = _time(item["time"])
        except ValueError as exc:
            fail("time", f"{label}: {exc}")
        else:
            skew = conf.intraday_clock_skew()
            if moment > now + timedelta(seconds=skew):
                fail("time", f"{label}: {moment.isoformat()} is in the future (the server's clock says "
                             f"{now.astimezone(UTC).isoformat(timespec='seconds')}, {skew:g} s of skew allowed)")
            out["time"] = moment
    bar_fields = [f for f in ("open", "high", "low", "close") if f in item]
    if "price" in item and bar_fields:
        fail(None, f"{label}: send price (a trade) or open, high, low and close (a bar), not both")
        return None
    fields = TRADE_FIELDS if "price" in item else BAR_FIELDS if bar_fields else ("price",)
    for name in fields:
        if name not in item:
            if name == "volume" and fields == TRADE_FIELDS:
                out["volume"] = 0.0
                continue
            fail(name, f"{label}: This field is required" + ("." if bar_fields else
                 " (or open, high, low, close and volume for a bar)."))
            continue
        try:
            if name == "volume":
                out[name] = _number(item[name], minimum=0.0, maximum=MAX_VOLUME, strict=False)
            else:
                out[name] = _number(item[name], minimum=0.0, maximum=MAX_PRICE, strict=True)
        except ValueError as exc:
            fail(name, f"{label}: {exc}")
    if all(f in out for f in ("open", "high", "low", "close")):
        if out["high"] < max(out["open"], out["close"], out["low"]):
            fail("high", f"{label}: high {out['high']:g} is below open, low or close")
        if out["low"] > min(out["open"], out["close"]):
            fail("low", f"{label}: low {out['low']:g} is above open or close")
    return out


def _last_bars(symbols: list[str]) -> dict[str, tuple[date | None, float | None]]:
    """symbol -> (its last stored bar's date, that bar's close; None, None: no bar yet), for the
    tickers of the universe."""
    latest = PriceBar.objects.filter(ticker=OuterRef("pk")).order_by("-date")
    rows = (Ticker.objects.filter(symbol__in=symbols)
            .annotate(last=Subquery(latest.values("date")[:1]), last_close=Subquery(latest.values("close")[:1]))
            .values_list("symbol", "last", "last_close"))
    return {symbol: (day, close) for symbol, day, close in rows}


def implausible_move(price: float, last_close: float | None) -> str | None:
    """Why ``price`` is too far from the ticker's last stored close to be a quote of the next session
    (``ML_INTRADAY_MAX_MOVE``), or None."""
    max_move = conf.intraday_max_move()
    if max_move <= 0 or not last_close or not math.isfinite(last_close) or last_close <= 0:
        return None
    ratio = price / last_close
    if 1.0 / (1.0 + max_move) <= ratio <= 1.0 + max_move:
        return None
    return (f"{price:g} is {ratio - 1.0:+.0%} from the last stored close {last_close:g}, more than "
            f"ML_INTRADAY_MAX_MOVE={max_move:g} allows (a bad tick, a split, or another ticker's price?)")


def _check_sessions(checked: list[tuple[int, dict[str, Any]]], errors: dict[str, list[str]]) -> None:
    """Tickers in the universe; each price within ``ML_INTRADAY_MAX_MOVE`` of the ticker's last stored
    close; each quote's session a trading day after the ticker's last stored bar."""
    last = _last_bars(sorted({q["ticker"] for _, q in checked if q.get("ticker")}))
    for i, quote in checked:
        ticker = quote.get("ticker")
        if not ticker:
            continue
        if ticker not in last:
            errors.setdefault(f"quotes[{i}].ticker", []).append(
                f"unknown ticker {ticker!r} (not in the universe: sync_universe or ingest_prices first)")
            continue
        last_date, last_close = last[ticker]
        for name in ("price", "open", "high", "low", "close"):
            why = implausible_move(quote[name], last_close) if name in quote else None
            if why:
                errors.setdefault(f"quotes[{i}].{name}", []).append(f"{ticker}: {why}")
        if "time" not in quote:
            continue
        session = session_of(quote["time"])
        where = f"quotes[{i}].time"
        if not is_trading_day(session):
            errors.setdefault(where, []).append(f"{ticker}: {session} (New York) is not a trading day (NYSE calendar)")
        elif last_date is not None and session <= last_date:
            errors.setdefault(where, []).append(
                f"{ticker}: the session of {session} is closed and stored (last bar {last_date}); "
                "quotes are for a session after it")


# --------------------------------------------------------------------------------------------------
# services


def quotes_push(*, quotes: Any, now: datetime | None = None) -> dict[str, Any]:
    """Check a ``POST /quotes`` body's ``quotes`` and update the tickers' bars (all or nothing).
    Returns the bars after the update."""
    now = now or timezone.now()
    if not isinstance(quotes, list):
        raise InvalidInput(f"expected a list of quotes, got {_describe(quotes)}", field="quotes")
    if not quotes:
        raise InvalidInput("send at least one quote", field="quotes")
    limit = conf.max_batch_size()
    if len(quotes) > limit:
        raise PayloadTooLarge(f"{len(quotes)} quotes is more than ML_MAX_BATCH_SIZE={limit}; split them",
                              field="quotes")
    errors: dict[str, list[str]] = {}
    checked = [(i, q) for i, item in enumerate(quotes) if (q := _check_item(i, item, errors, now=now)) is not None]
    _check_sessions(checked, errors)
    if errors:
        raise QuoteErrors(errors)
    updates: dict[str, list[Any]] = {}
    for _, quote in sorted(checked, key=lambda iq: iq[1]["time"]):  # a feed's order need not be the trades'
        ticker = quote["ticker"]
        if "price" in quote:
            updates.setdefault(ticker, []).append(
                {"price": quote["price"], "size": quote["volume"], "time": quote["time"], "source": "push"})
        else:
            updates.setdefault(ticker, []).append(TodayBar(
                ticker, session_of(quote["time"]), quote["open"], quote["high"], quote["low"], quote["close"],
                quote["volume"], quote["time"], "push"))
    stored = _store(updates)
    return {"accepted": len(checked), "bars": [bar_view(b) for b in stored.values()], "timestamp": timezone.now()}


def bar_view(bar: TodayBar) -> dict[str, Any]:
    """A bar as the API shows it."""
    return {"ticker": bar.ticker, "session": bar.session, "open": bar.open, "high": bar.high, "low": bar.low,
            "close": bar.close, "volume": bar.volume, "time": bar.time, "source": bar.source}


def _in_poll_hours(now: datetime) -> bool:
    local = now.astimezone(MARKET_TZ)
    if not is_trading_day(local.date()):
        return False
    try:
        start, end = (dt_time.fromisoformat(part.strip()) for part in conf.intraday_poll_hours().split("-"))
    except ValueError:
        logger.warning("ML_INTRADAY_POLL_HOURS %r is not HH:MM-HH:MM; polling 09:30-16:00",
                       conf.intraday_poll_hours())
        start, end = dt_time(9, 30), dt_time(16, 0)
    return start <= local.time().replace(tzinfo=None) <= end


def _poll_tickers() -> list[str]:
    configured = conf.intraday_poll_tickers()
    if configured:
        return configured
    return list(Ticker.objects.filter(active=True).order_by("symbol").values_list("symbol", flat=True))


def quotes_poll(*, tickers: list[str] | None = None, now: datetime | None = None,
                force: bool = False) -> dict[str, Any]:
    """Poll the provider's snapshot (``ML_INTRADAY_POLL_PROVIDER``) for ``tickers`` (default
    ``ML_INTRADAY_POLL_TICKERS``, else every active ticker) and store their bars. Without ``force``
    (the periodic task) only when ``ML_INTRADAY_POLL_ENABLED`` and within ``ML_INTRADAY_POLL_HOURS``
    of a trading day. Returns a summary (requests, cost, bars stored, skipped by reason)."""
    started = time.perf_counter()
    now = now or timezone.now()
    if not force:
        if not conf.intraday_poll_enabled():
            return {"status": "skipped", "reason": "ML_INTRADAY_POLL_ENABLED is off"}
        if not _in_poll_hours(now):
            return {"status": "skipped", "reason": f"outside ML_INTRADAY_POLL_HOURS ({conf.intraday_poll_hours()} "
                                                   "New York) of a trading day"}
    symbols = list(dict.fromkeys(t.strip().upper() for t in (tickers or _poll_tickers()) if t.strip()))
    fetched = fetch_quotes(tickers=symbols, provider=conf.intraday_poll_provider())
    last = _last_bars(symbols)
    source = conf.intraday_poll_provider()
    skipped: dict[str, int] = {}
    updates: dict[str, list[Any]] = {}

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for row in fetched.frame.itertuples(index=False):
        price = float(row.price)
        if row.ticker not in last:
            skip("not_in_universe")
            continue
        if not (math.isfinite(price) and price > 0) or pd.isna(row.time):
            skip("no_price")
            continue
        moment = row.time.to_pydatetime().astimezone(UTC)
        session = session_of(moment)
        last_date, last_close = last[row.ticker]
        if moment > now + timedelta(seconds=conf.intraday_clock_skew()):
            skip("future_time")
        elif not is_trading_day(session) or (last_date is not None and session <= last_date):
            skip("session_closed")  # the last trade is of a session already stored (before today's first)
        elif why := implausible_move(price, last_close):
            logger.warning("%s quote skipped: %s", row.ticker, why)
            skip("implausible_move")
        else:
            o, h, lo, v = (float(x) for x in (row.open, row.high, row.low, row.volume))
            if all(math.isfinite(x) for x in (o, h, lo)):
                bar = TodayBar(row.ticker, session, o, max(h, price), min(lo, price), price,
                               v if math.isfinite(v) and v >= 0 else 0.0, moment, source)
            else:  # no day bar yet (before the first regular print): the last trade alone
                bar = TodayBar(row.ticker, session, price, price, price, price, 0.0, moment, source)
            updates[row.ticker] = [bar]
    stored = _store(updates) if updates else {}
    return {
        "status": "partial" if fetched.error else "ok", "provider": conf.intraday_poll_provider(),
        "requested": len(symbols), "received": len(fetched.frame), "stored": len(stored),
        "skipped": dict(sorted(skipped.items())), "calls": fetched.calls, "cost_usd": round(fetched.cost_usd, 6),
        "bytes": fetched.bytes, "error": fetched.error, "seconds": round(time.perf_counter() - started, 3),
    }

