"""Polygon.io adapter: the whole US market's daily bars in one request per day.

Endpoints (https://polygon.io/docs/stocks), key in the ``Authorization: Bearer <key>`` header (the
documented alternative to ``?apiKey=``; it keeps the key out of URLs, logs and ``next_url``):

* grouped daily ``GET {base}/v2/aggs/grouped/locale/us/market/stocks/{YYYY-MM-DD}?adjusted=true``:
  ``{"status": "OK", "resultsCount": n, "results": [{"T", "o", "h", "l", "c", "v", "vw", "t", "n"}]}``;
  a market holiday answers ``resultsCount: 0`` without ``results``. ``adjusted=true``: prices are
  split-adjusted as of the request, so a day fetched after a later split is already on the new scale;
* splits ``GET {base}/v3/reference/splits?execution_date.gte=..&execution_date.lte=..`` and
  dividends ``GET {base}/v3/reference/dividends?ex_dividend_date.gte=..&ex_dividend_date.lte=..``:
  ``{"status": "OK", "results": [...], "next_url": "..."}`` (paginated; ``next_url`` is followed
  and each page is one metered request);
* per-ticker aggregates ``GET {base}/v2/aggs/ticker/{T}/range/1/day/{from}/{to}?adjusted=true``
  for backfills (``fetch_daily``);
* snapshot ``GET {base}/v2/snapshot/locale/us/markets/stocks/tickers[?tickers=A,B]`` for the API's
  intraday bars (``fetch_snapshot``): ``{"status": "OK", "tickers": [{"ticker", "day": {"o", "h", "l",
  "c", "v", "vw"}, "lastTrade": {"p", "s", "t"}, "updated"}]}`` (times in nanoseconds since the epoch).

Errors: 401/403 ``{"status": "ERROR"|"NOT_AUTHORIZED", "error"|"message": ...}`` -> AuthError;
429 -> RateLimitedError (retried); ``status: "ERROR"`` in a 200 reply -> BadResponseError.
Framework-free: no Django here; ``features.services.market_updates`` stores what this returns.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from .base import AuthError, BadResponseError, HttpProvider, empty_prices, finish_prices
from .http import HttpResponse

GROUPED_COLUMNS = ["ticker", "date", "open", "high", "low", "close", "volume", "vwap", "trades"]
SPLIT_COLUMNS = ["ticker", "date", "split_from", "split_to"]
DIVIDEND_COLUMNS = ["ticker", "date", "cash_amount"]
PAGE_LIMIT = 1000
MAX_PAGES = 1000  # 1M corporate actions: a runaway cursor, not a market
HISTORY_START = date(2003, 9, 10)  # the start of Polygon's daily history


def polygon_symbol(symbol: str) -> str:
    """Polygon writes share classes with a dot (``BRK.B``), as the store does."""
    return symbol.strip().upper().replace("-", ".").replace("/", ".")


def _payload(response: HttpResponse, what: str, symbol: str | None = None) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError as exc:
        raise BadResponseError(f"Polygon {what} reply is not JSON: {exc}", symbol=symbol) from None
    if not isinstance(payload, dict):
        raise BadResponseError(f"Polygon {what} reply is not a JSON object", symbol=symbol)
    status = str(payload.get("status", "")).upper()
    if status in ("ERROR", "NOT_AUTHORIZED"):
        detail = str(payload.get("error") or payload.get("message") or status)[:160]
        if status == "NOT_AUTHORIZED" or "api key" in detail.lower():
            raise AuthError(f"Polygon rejected the API key: {detail}", symbol=symbol)
        raise BadResponseError(f"Polygon {what}: {detail}", symbol=symbol)
    return payload


def _bars_frame(results: list[dict[str, Any]], *, day: date | None, what: str) -> pd.DataFrame:
    """``results`` of an aggregates reply -> GROUPED_COLUMNS (``date`` from ``t`` unless ``day``)."""
    if not results:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in GROUPED_COLUMNS}).assign(
            ticker=pd.Series(dtype=object), date=pd.Series(dtype="datetime64[ns]"))
    frame = pd.DataFrame(results)
    missing = [k for k in ("o", "h", "l", "c", "v") if k not in frame.columns]
    if missing or (day is None and "t" not in frame.columns) or ("T" not in frame.columns and day is not None):
        raise BadResponseError(f"Polygon {what} bars lack {missing or ['T' if day is not None else 't']}")
    out = pd.DataFrame({
        "ticker": frame["T"].astype(str).map(polygon_symbol) if "T" in frame.columns else "",
        # ``t`` is the bar's start in ms since the epoch; the trading day is its New York date
        "date": (pd.Timestamp(day) if day is not None else
                 pd.to_datetime(frame["t"], unit="ms", utc=True).dt.tz_convert("America/New_York")
                 .dt.tz_localize(None).dt.normalize()),
        "open": pd.to_numeric(frame["o"], errors="coerce"),
        "high": pd.to_numeric(frame["h"], errors="coerce"),
        "low": pd.to_numeric(frame["l"], errors="coerce"),
        "close": pd.to_numeric(frame["c"], errors="coerce"),
        "volume": pd.to_numeric(frame["v"], errors="coerce"),
        "vwap": pd.to_numeric(frame["vw"], errors="coerce") if "vw" in frame.columns else np.nan,
        "trades": pd.to_numeric(frame["n"], errors="coerce") if "n" in frame.columns else np.nan,
    })
    out["date"] = pd.to_datetime(out["date"]).astype("datetime64[ns]")
    return out[GROUPED_COLUMNS]


SNAPSHOT_COLUMNS = ["ticker", "time", "open", "high", "low", "close", "volume", "price"]


def _positive(value: Any) -> float:
    """A JSON number > 0 as a float, else NaN (Polygon writes 0 for a day bar before the first trade)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return np.nan
    number = float(value)
    return number if np.isfinite(number) and number > 0 else np.nan


def _snapshot_frame(items: list[Any]) -> pd.DataFrame:
    """``tickers`` of a snapshot reply -> SNAPSHOT_COLUMNS (rows without a ticker are dropped)."""
    rows = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("ticker"), str):
            continue
        day = item.get("day") if isinstance(item.get("day"), dict) else {}
        last = item.get("lastTrade") if isinstance(item.get("lastTrade"), dict) else {}
        stamp = _positive(last.get("t"))
        if np.isnan(stamp):
            stamp = _positive(item.get("updated"))
        price = _positive(last.get("p"))
        volume = day.get("v")
        rows.append({
            "ticker": polygon_symbol(item["ticker"]), "time": stamp,
            "open": _positive(day.get("o")), "high": _positive(day.get("h")), "low": _positive(day.get("l")),
            "close": _positive(day.get("c")),
            "volume": float(volume) if isinstance(volume, int | float) and not isinstance(volume, bool) else np.nan,
            "price": price if np.isfinite(price) else _positive(day.get("c")),
        })
    frame = pd.DataFrame(rows, columns=SNAPSHOT_COLUMNS)
    # nanoseconds since the epoch (SIP time) -> aware UTC timestamps
    frame["time"] = pd.to_datetime(frame["time"].astype("float64"), unit="ns", utc=True, errors="coerce")
    return frame


def dividend_adjusted_close(close: pd.Series, dividends: pd.Series) -> pd.Series:
    """Close adjusted for cash dividends (CRSP/Yahoo convention): each ex-date multiplies every
    earlier close by ``1 - D / close of the day before``. ``close`` and ``dividends`` share a date
    index (sorted); the last day's adjusted close equals its close."""
    prev = close.shift(1)
    factor = (1.0 - dividends.fillna(0.0) / prev).where(dividends.fillna(0.0) > 0, 1.0).fillna(1.0)
    # the factor of ex-date e applies to the days before e: a reversed cumulative product, shifted
    behind = factor[::-1].cumprod()[::-1].shift(-1).fillna(1.0)
    return close * behind


class PolygonProvider(HttpProvider):
    name = "polygon"
    supports_date_range = True
    bulk = True  # fetch_grouped: every ticker of a day in one request

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.api_key}"}

    def _require_key(self, symbol: str | None = None) -> None:
        if not self.config.api_key:
            raise AuthError("POLYGON_API_KEY is not set", symbol=symbol, provider=self.name)

    # -- bulk ---------------------------------------------------------------------------------------
    def fetch_grouped(self, day: date) -> pd.DataFrame:
        """Every US stock's bar of ``day`` (split-adjusted as of now): GROUPED_COLUMNS."""
        self._require_key()

        def parse(response: HttpResponse) -> pd.DataFrame:
            payload = _payload(response, "grouped daily")
            results = payload.get("results") or []
            if int(payload.get("resultsCount", len(results)) or 0) != len(results):
                raise BadResponseError(f"Polygon grouped daily {day}: resultsCount {payload.get('resultsCount')} "
                                       f"but {len(results)} results")
            return _bars_frame(results, day=day, what=f"grouped daily {day}")

        url = f"{self.config.base_url}/v2/aggs/grouped/locale/us/market/stocks/{day.isoformat()}"
        return self.request(url, endpoint="grouped_daily", symbol=None, params={"adjusted": "true"},
                            headers=self.headers(), parse=parse)

    def fetch_snapshot(self, tickers: list[str] | None = None) -> pd.DataFrame:
        """The session so far of ``tickers`` (None: every US stock) in one request: SNAPSHOT_COLUMNS,
        one row per ticker with a usable price. ``time`` (UTC) is the last trade's, else the
        snapshot's ``updated``; ``open``..``volume`` are the day bar (NaN before the day's first
        trade), ``price`` the last trade (else the day's close)."""
        self._require_key()
        params = {"tickers": ",".join(polygon_symbol(t) for t in tickers)} if tickers else None

        def parse(response: HttpResponse) -> pd.DataFrame:
            payload = _payload(response, "snapshot")
            items = payload.get("tickers") or []
            if not isinstance(items, list):
                raise BadResponseError("Polygon snapshot: tickers is not a list")
            return _snapshot_frame(items)

        url = f"{self.config.base_url}/v2/snapshot/locale/us/markets/stocks/tickers"
        return self.request(url, endpoint="snapshot", symbol=None, params=params, headers=self.headers(),
                            parse=parse)

    def _paged(self, path: str, params: dict[str, Any], *, endpoint: str, symbol: str | None) -> list[dict]:
        url: str | None = f"{self.config.base_url}{path}"
        query: dict[str, Any] | None = {**params, "limit": PAGE_LIMIT}
        rows: list[dict] = []
        for _ in range(MAX_PAGES):
            if url is None:
                return rows
            page = self.request(url, endpoint=endpoint, symbol=symbol, params=query, headers=self.headers(),
                                parse=lambda r: _payload(r, endpoint, symbol))
            results = page.get("results") or []
            if not isinstance(results, list):
                raise BadResponseError(f"Polygon {endpoint}: results is not a list", symbol=symbol)
            rows.extend(results)
            url, query = page.get("next_url") or None, None  # next_url carries the cursor and filters
        raise BadResponseError(f"Polygon {endpoint}: more than {MAX_PAGES} pages", symbol=symbol)

    def _reference(self, path: str, date_field: str, values: list[str], *, start: date, end: date,
                   symbol: str | None) -> pd.DataFrame:
        """Rows of a paginated reference endpoint dated in [start, end]: ticker, date, ``values``
        (numeric); a row with an unreadable date or a value that is not > 0 (dividends: >= 0) is
        refused with the count and the first such row."""
        self._require_key(symbol)
        params: dict[str, Any] = {f"{date_field}.gte": start.isoformat(), f"{date_field}.lte": end.isoformat()}
        if symbol:
            params["ticker"] = polygon_symbol(symbol)
        what = path.rsplit("/", 1)[1]
        frame = pd.DataFrame(self._paged(path, params, endpoint=what, symbol=symbol),
                             columns=["ticker", date_field, *values])
        out = pd.DataFrame({"ticker": frame["ticker"].astype(str).map(polygon_symbol),
                            "date": pd.to_datetime(frame[date_field], errors="coerce"),
                            **{v: pd.to_numeric(frame[v], errors="coerce") for v in values}})
        floor_ok = (out[values] >= 0) if what == "dividends" else (out[values] > 0)
        bad = out["date"].isna() | ~floor_ok.all(axis=1)
        if bad.any():
            raise BadResponseError(f"Polygon {what}: {int(bad.sum())} unreadable rows, e.g. "
                                   f"{frame.loc[bad].iloc[0].to_dict()}", symbol=symbol)
        return out

    def fetch_splits(self, *, start: date, end: date, symbol: str | None = None) -> pd.DataFrame:
        """Splits executed in [start, end]: SPLIT_COLUMNS (``split_from`` old shares -> ``split_to``)."""
        out = self._reference("/v3/reference/splits", "execution_date", ["split_from", "split_to"],
                              start=start, end=end, symbol=symbol)
        return out.sort_values(["ticker", "date"], kind="stable").reset_index(drop=True)

    def fetch_dividends(self, *, start: date, end: date, symbol: str | None = None) -> pd.DataFrame:
        """Cash dividends going ex in [start, end]: DIVIDEND_COLUMNS."""
        out = self._reference("/v3/reference/dividends", "ex_dividend_date", ["cash_amount"],
                              start=start, end=end, symbol=symbol)
        # two declarations of one ex-date (a special and a regular dividend) add up
        return out.groupby(["ticker", "date"], as_index=False)["cash_amount"].sum()

    # -- per ticker (backfills) -------------------------------------------------------------------
    def fetch_daily(self, symbol: str, *, since: date | None = None) -> pd.DataFrame:
        """A ticker's bars after ``since`` (split-adjusted), with its dividends in
        ``dividend_amount`` and ``adj_close`` adjusted for them (two requests). No
        ``split_coefficient``: the series is split-adjusted as a whole, so a changed close of the
        re-fetched last bar is what rescales the stored history (as with Stooq)."""
        symbol = symbol.strip().upper()
        self._require_key(symbol)
        end = self._today()
        start = HISTORY_START if since is None else since + timedelta(days=1)
        if start > end:
            return empty_prices()

        def parse(response: HttpResponse) -> pd.DataFrame:
            payload = _payload(response, "aggregates", symbol)
            return _bars_frame(payload.get("results") or [], day=None, what="aggregates")

        url = (f"{self.config.base_url}/v2/aggs/ticker/{polygon_symbol(symbol)}/range/1/day/"
               f"{start.isoformat()}/{end.isoformat()}")
        bars = self.request(url, endpoint="aggregates", symbol=symbol,
                            params={"adjusted": "true", "sort": "asc", "limit": 50000},
                            headers=self.headers(), parse=parse)
        if bars.empty:
            return empty_prices()
        dividends = self.fetch_dividends(start=start, end=end, symbol=symbol)
        bars = bars.drop(columns=["ticker", "vwap", "trades"]).sort_values("date").reset_index(drop=True)
        cash = bars["date"].map(dividends.set_index("date")["cash_amount"]).fillna(0.0)
        bars["dividend_amount"] = cash.to_numpy()
        bars["adj_close"] = dividend_adjusted_close(bars["close"], bars["dividend_amount"]).to_numpy()
        return finish_prices(bars, since)
