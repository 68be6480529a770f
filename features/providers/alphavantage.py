"""Alpha Vantage adapter (https://www.alphavantage.co/documentation/).

Daily bars: ``function=TIME_SERIES_DAILY_ADJUSTED&symbol=X&outputsize=compact|full&datatype=json``,
whose "Time Series (Daily)" fields are "1. open" .. "8. split coefficient". Raw (unadjusted)
open/high/low/close, "5. adjusted close", dividends and split coefficients come back as columns.
``compact`` (latest 100 points) is asked for when ``since`` is within the last 100 calendar days,
``full`` otherwise; rows on or before ``since`` are filtered out here (the API has no date range).

Alpha Vantage reports errors with HTTP 200 and a one-key JSON object:

* ``{"Error Message": "Invalid API call. ..."}`` -> ``not_found`` (unknown symbol); when the message
  is about the ``apikey`` parameter -> ``auth``;
* ``{"Note": "Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per
  minute ..."}`` and ``{"Information": "... rate limit ..."}`` -> ``rate_limited``, retried with
  backoff (a daily-quota message, which says "per day" and nothing shorter, is not retried);
* ``{"Information": "... premium endpoint ..."}`` or a missing/invalid key message -> ``auth``.

News: ``function=NEWS_SENTIMENT&tickers=X[&time_from=YYYYMMDDTHHMM]`` ("feed" list).
Fundamentals: ``function=OVERVIEW&symbol=X``.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

import pandas as pd

from .base import (
    NEWS_COLUMNS,
    AuthError,
    BadResponseError,
    HttpProvider,
    NotFoundError,
    RateLimitedError,
    finish_prices,
)
from .http import HttpResponse

SERIES_KEY = "Time Series (Daily)"
FIELD_MAP = {
    "1. open": "open",
    "2. high": "high",
    "3. low": "low",
    "4. close": "close",
    "5. adjusted close": "adj_close",
    "6. volume": "volume",
    "7. dividend amount": "dividend_amount",
    "8. split coefficient": "split_coefficient",
}
# TIME_SERIES_DAILY (non-adjusted) uses "5. volume"; accepted for robustness.
FIELD_MAP_DAILY = {"1. open": "open", "2. high": "high", "3. low": "low", "4. close": "close", "5. volume": "volume"}
COMPACT_DAYS = 100


def _message_kind(key: str, message: str) -> str:
    """Classify one of Alpha Vantage's HTTP-200 messages: rate / rate_daily / auth / not_found / other."""
    low = message.lower()
    if "call frequency" in low or "rate limit" in low or "calls per" in low or "requests per" in low \
            or "optimizing your api call" in low:
        if ("per day" in low or "daily" in low) and not ("minute" in low or "second" in low):
            return "rate_daily"
        return "rate"
    if "premium" in low:
        return "auth"
    if re.search(r"api ?key", low) and ("invalid" in low or "missing" in low or "claim" in low or "provide" in low):
        return "auth"
    if key == "Error Message":
        return "not_found"
    return "other"


def raise_for_message(payload: Any, *, symbol: str) -> None:
    if not isinstance(payload, dict):
        return
    for key in ("Error Message", "Note", "Information"):
        if key not in payload:
            continue
        message = str(payload[key])
        kind = _message_kind(key, message)
        short = message[:160]
        if kind == "rate":
            raise RateLimitedError(f"Alpha Vantage rate limit: {short}", symbol=symbol, retryable=True)
        if kind == "rate_daily":
            raise RateLimitedError(f"Alpha Vantage daily quota used up: {short}", symbol=symbol, retryable=False)
        if kind == "auth":
            raise AuthError(f"Alpha Vantage rejected the API key: {short}", symbol=symbol)
        if kind == "not_found":
            raise NotFoundError(f"unknown ticker at Alpha Vantage: {short}", symbol=symbol)
        raise BadResponseError(f"Alpha Vantage {key}: {short}", symbol=symbol)


class AlphaVantageProvider(HttpProvider):
    """``adjusted=False`` uses ``TIME_SERIES_DAILY`` (raw OHLCV only; no adjusted close, dividends or
    splits) for keys without access to the premium ``TIME_SERIES_DAILY_ADJUSTED`` endpoint."""

    name = "alphavantage"
    supports_news = True
    supports_fundamentals = True
    supports_date_range = False

    def __init__(self, *args: Any, adjusted: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.adjusted = adjusted

    @property
    def daily_function(self) -> str:
        return "TIME_SERIES_DAILY_ADJUSTED" if self.adjusted else "TIME_SERIES_DAILY"

    def _params(self, function: str, **params: Any) -> dict[str, Any]:
        return {"function": function, **params, "apikey": self.config.api_key}

    def _require_key(self, symbol: str) -> None:
        if not self.config.api_key:  # every call would come back "apikey is invalid or missing"
            raise AuthError("ALPHAVANTAGE_API_KEY is not set", symbol=symbol, provider=self.name)

    def outputsize_for(self, since: date | None) -> str:
        if since is not None and (self._today() - since).days <= COMPACT_DAYS:
            return "compact"
        return "full"

    def fetch_daily(self, symbol: str, *, since: date | None = None) -> pd.DataFrame:
        symbol = symbol.strip().upper()
        self._require_key(symbol)
        params = self._params(
            self.daily_function, symbol=symbol, outputsize=self.outputsize_for(since), datatype="json"
        )

        def parse(response: HttpResponse) -> pd.DataFrame:
            return self.parse_daily(response, symbol)

        frame = self.request(self.config.base_url, endpoint=self.daily_function, symbol=symbol,
                             params=params, parse=parse)
        return finish_prices(frame, since, with_actions=self.adjusted)

    @staticmethod
    def parse_daily(response: HttpResponse, symbol: str) -> pd.DataFrame:
        try:
            payload = response.json()
        except ValueError as exc:
            raise BadResponseError(f"Alpha Vantage reply is not JSON: {exc}", symbol=symbol) from None
        raise_for_message(payload, symbol=symbol)
        if not isinstance(payload, dict):
            raise BadResponseError("Alpha Vantage reply is not a JSON object", symbol=symbol)
        series = payload.get(SERIES_KEY)
        if series is None:
            raise BadResponseError(f"Alpha Vantage reply has no {SERIES_KEY!r} (keys: {sorted(payload)[:5]})",
                                   symbol=symbol)
        if not isinstance(series, dict):
            raise BadResponseError(f"{SERIES_KEY!r} is not an object", symbol=symbol)
        if not series:
            return pd.DataFrame(columns=["date", *FIELD_MAP.values()])
        frame = pd.DataFrame.from_dict(series, orient="index")
        mapping = FIELD_MAP if "5. adjusted close" in frame.columns else FIELD_MAP_DAILY
        missing = [k for k in ("1. open", "2. high", "3. low", "4. close") if k not in frame.columns]
        if missing:
            raise BadResponseError(f"Alpha Vantage bars lack {missing}", symbol=symbol)
        frame = frame.rename(columns=mapping)[[v for k, v in mapping.items() if k in frame.columns]]
        frame.index.name = "date"
        frame = frame.reset_index()
        frame["date"] = pd.to_datetime(frame["date"], format="%Y-%m-%d", errors="raise")
        return frame

    # -- news ---------------------------------------------------------------------------------------
    def fetch_news(self, symbol: str, since: date | None = None, *, limit: int = 200) -> pd.DataFrame:
        symbol = symbol.strip().upper()
        self._require_key(symbol)
        params: dict[str, Any] = {"tickers": symbol, "sort": "LATEST", "limit": limit}
        if since is not None:
            params["time_from"] = (since + timedelta(days=1)).strftime("%Y%m%dT0000")
        params = self._params("NEWS_SENTIMENT", **params)

        def parse(response: HttpResponse) -> pd.DataFrame:
            return self.parse_news(response, symbol)

        frame = self.request(self.config.base_url, endpoint="NEWS_SENTIMENT", symbol=symbol, params=params,
                             parse=parse)
        if since is not None and not frame.empty:
            frame = frame[frame["time_published"] >= pd.Timestamp(since + timedelta(days=1))]
        return frame.reset_index(drop=True)

    @staticmethod
    def parse_news(response: HttpResponse, symbol: str) -> pd.DataFrame:
        try:
            payload = response.json()
        except ValueError as exc:
            raise BadResponseError(f"Alpha Vantage news reply is not JSON: {exc}", symbol=symbol) from None
        raise_for_message(payload, symbol=symbol)
        feed = payload.get("feed") if isinstance(payload, dict) else None
        if feed is None:
            raise BadResponseError("Alpha Vantage news reply has no 'feed'", symbol=symbol)
        rows = []
        for item in feed:
            if not isinstance(item, dict):
                continue
            score = item.get("overall_sentiment_score")
            for ts in item.get("ticker_sentiment") or []:
                if isinstance(ts, dict) and str(ts.get("ticker", "")).upper() == symbol:
                    score = ts.get("ticker_sentiment_score", score)
            rows.append({
                "ticker": symbol,
                "time_published": item.get("time_published"),
                "title": item.get("title") or "",
                "url": item.get("url") or "",
                "source": item.get("source") or "",
                "summary": item.get("summary") or "",
                "provider_score": score,
            })
        frame = pd.DataFrame(rows, columns=NEWS_COLUMNS)
        # "20240101T120000" (seconds sometimes omitted); Alpha Vantage stamps are US/Eastern.
        frame["time_published"] = pd.to_datetime(frame["time_published"].astype("string").str.ljust(15, "0"),
                                                 format="%Y%m%dT%H%M%S", errors="coerce")
        frame["provider_score"] = pd.to_numeric(frame["provider_score"], errors="coerce")
        return frame.dropna(subset=["time_published"]).sort_values("time_published").reset_index(drop=True)

    # -- fundamentals -------------------------------------------------------------------------------
    def fetch_fundamentals(self, symbol: str) -> dict[str, Any]:
        symbol = symbol.strip().upper()
        self._require_key(symbol)

        def parse(response: HttpResponse) -> dict[str, Any]:
            try:
                payload = response.json()
            except ValueError as exc:
                raise BadResponseError(f"Alpha Vantage overview is not JSON: {exc}", symbol=symbol) from None
            raise_for_message(payload, symbol=symbol)
            if not isinstance(payload, dict) or not payload:
                raise NotFoundError("unknown ticker at Alpha Vantage (empty OVERVIEW)", symbol=symbol)
            out: dict[str, Any] = {}
            for key, value in payload.items():
                if value in (None, "None", "-", ""):
                    out[key] = None
                    continue
                try:
                    out[key] = float(value) if re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", str(value)) else value
                except ValueError:
                    out[key] = value
            return out

        return self.request(self.config.base_url, endpoint="OVERVIEW", symbol=symbol,
                            params=self._params("OVERVIEW", symbol=symbol), parse=parse)
