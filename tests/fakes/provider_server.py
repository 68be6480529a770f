"""A local fake of the price providers' HTTP APIs, for tests without the internet.

``FakeProviderServer`` runs ``http.server`` in a thread on 127.0.0.1 (port 0) and answers in each
provider's documented format:

* Alpha Vantage ``/query?function=TIME_SERIES_DAILY_ADJUSTED|NEWS_SENTIMENT|OVERVIEW&...&apikey=K``:
  "Meta Data" + "Time Series (Daily)" with "1. open" .. "8. split coefficient" (newest first,
  ``compact`` = latest 100 points), and its HTTP-200 error objects ("Error Message", "Note",
  "Information"); ``OVERVIEW`` answers ``server.overviews[T]`` (``overview_item`` builds one), a
  fixed reply for a ticker with bars, ``{}`` (as Alpha Vantage does) for one it does not know;
* Stooq ``/q/d/l/?s=aapl.us&i=d[&d1=YYYYMMDD&d2=YYYYMMDD]``: CSV ``Date,Open,High,Low,Close,Volume``
  or the body ``No data``;
* Tiingo ``/tiingo/daily/<ticker>/prices?startDate=...`` with ``Authorization: Token K`` (or
  ``?token=K``): JSON list with date, open, ..., adjClose, divCash, splitFactor; 404
  ``{"detail": "Error: Ticker 'X' not found"}``; 401 ``{"detail": "Invalid token."}``.

* Polygon (``Authorization: Bearer K``): grouped daily
  ``/v2/aggs/grouped/locale/us/market/stocks/<date>`` over every ticker of ``server.polygon_bars``
  (``{"status", "queryCount", "resultsCount", "adjusted", "results": [{"T", "o", "h", "l", "c", "v",
  "vw", "t", "n"}]}``, no ``results`` on a day without bars), ``/v3/reference/splits`` and
  ``/v3/reference/dividends`` from ``polygon_splits`` / ``polygon_dividends`` (pages of
  ``polygon_page_size`` rows linked by ``next_url``), and per-ticker
  ``/v2/aggs/ticker/<T>/range/1/day/<from>/<to>``; 401 ``{"status": "ERROR", "error": "Unknown API
  Key"}``; the snapshot ``/v2/snapshot/locale/us/markets/stocks/tickers[?tickers=A,B]`` from
  ``server.polygon_snapshots`` (ticker -> the item as Polygon writes it, ``snapshot_item`` builds one):
  ``{"status": "OK", "count", "tickers": [...]}``, only the requested tickers it knows.

Per-test scripting: ``server.script("AAPL", Reply.status(503), Reply.status(429, retry_after=1))``
queues replies that are served (one per request for that ticker) before the normal answer.
Every request is logged in ``server.requests``.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import zlib
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

import numpy as np
import pandas as pd

AV_INVALID_CALL = (
    "Invalid API call. Please retry or visit the documentation (https://www.alphavantage.co/documentation/) "
    "for TIME_SERIES_DAILY_ADJUSTED."
)
AV_NOTE = (
    "Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute and 500 calls "
    "per day. Please visit https://www.alphavantage.co/premium/ if you would like to target a higher API call "
    "frequency."
)
AV_INFORMATION_RATE = (
    "Thank you for using Alpha Vantage! Please consider spreading out your free API requests more sparingly "
    "(1 request per second). You may subscribe to any of the premium plans at "
    "https://www.alphavantage.co/premium/ to lift the free key rate limit (25 requests per day), raise the "
    "per-second burst limit, and instantly unlock all premium endpoints"
)
AV_DAILY_QUOTA = (
    "Thank you for using Alpha Vantage! Our standard API rate limit is 25 requests per day. Please subscribe "
    "to any of the premium plans at https://www.alphavantage.co/premium/ to instantly remove all daily rate "
    "limits."
)
AV_INVALID_KEY = (
    "the parameter apikey is invalid or missing. Please claim your free API key on "
    "(https://www.alphavantage.co/support/#api-key). It should take less than 20 seconds."
)


@dataclass
class Reply:
    """One scripted HTTP reply."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    passthrough: bool = False  # after ``delay``, serve the normal answer

    @classmethod
    def error(cls, status: int, *, retry_after: str | int | None = None, body: str = "") -> Reply:
        headers = {"Content-Type": "text/plain"}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        return cls(status=status, body=(body or f"HTTP {status}").encode(), headers=headers)

    @classmethod
    def json(cls, payload: object, status: int = 200) -> Reply:
        return cls(status=status, body=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})

    @classmethod
    def av_note(cls) -> Reply:
        return cls.json({"Note": AV_NOTE})

    @classmethod
    def av_information_rate(cls) -> Reply:
        return cls.json({"Information": AV_INFORMATION_RATE})

    @classmethod
    def av_daily_quota(cls) -> Reply:
        return cls.json({"Information": AV_DAILY_QUOTA})

    @classmethod
    def slow(cls, seconds: float) -> Reply:
        return cls(delay=seconds, passthrough=True)


@dataclass
class LoggedRequest:
    provider: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    symbol: str | None
    at: float


class ScriptedServer:
    """``http.server`` in a thread on 127.0.0.1 (port 0) answering GET requests: ``_route`` names a
    request's provider and symbol, ``_answer`` answers it. Every request is logged in ``requests``;
    replies queued by ``script`` for its symbol are served first."""

    thread_name = "fake-http"

    def __init__(self) -> None:
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self.requests: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name=self.thread_name, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, symbol: str, *replies: Reply) -> None:
        with self._lock:
            self._scripts[symbol.upper()].extend(replies)

    def count(self, symbol: str | None = None, provider: str | None = None) -> int:
        with self._lock:
            return sum(
                1 for r in self.requests
                if (symbol is None or r.symbol == symbol.upper()) and (provider is None or r.provider == provider)
            )

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002 - keep test output (and keys) quiet
                return

            def do_GET(self):  # noqa: N802
                status, body, headers = server._dispatch(self.path, dict(self.headers.items()))
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out first
                    pass
                self.close_connection = True

        return Handler

    @staticmethod
    def _json(payload: object, status: int = 200) -> tuple[int, bytes, dict[str, str]]:
        return status, json.dumps(payload).encode(), {"Content-Type": "application/json"}

    def _dispatch(self, raw_path: str, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        parsed = urllib.parse.urlsplit(raw_path)
        params = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        path = parsed.path
        provider, symbol = self._route(path, params)
        with self._lock:
            self.requests.append(LoggedRequest(provider, path, params, headers, symbol, time.monotonic()))
            queue = self._scripts.get(symbol or "")
            reply = queue.popleft() if queue else None
        if reply is not None:
            if reply.delay:
                time.sleep(reply.delay)
            if not reply.passthrough:
                return reply.status, reply.body, reply.headers
        return self._answer(provider, path, params, headers, symbol)

    def _route(self, path: str, params: dict[str, str]) -> tuple[str, str | None]:
        raise NotImplementedError

    def _answer(self, provider: str, path: str, params: dict[str, str], headers: dict[str, str],
                symbol: str | None) -> tuple[int, bytes, dict[str, str]]:
        raise NotImplementedError


def make_bars(symbol: str, *, end: date, days: int = 300, seed: int | None = None) -> pd.DataFrame:
    """Deterministic synthetic business-day bars ending at ``end`` (raw OHLCV, adj_close, actions)."""
    rng = np.random.default_rng(seed if seed is not None else zlib.crc32(symbol.encode()))
    dates = pd.bdate_range(end=pd.Timestamp(end), periods=days)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0, 0.01, len(dates))))
    open_ = close * (1 + rng.normal(0, 0.003, len(dates)))
    high = np.maximum(open_, close) * 1.005
    low = np.minimum(open_, close) * 0.995
    volume = rng.integers(100_000, 5_000_000, len(dates))
    dividend = np.zeros(len(dates))
    dividend[len(dates) // 2] = 0.24
    return pd.DataFrame({
        "date": dates, "open": open_.round(4), "high": high.round(4), "low": low.round(4), "close": close.round(4),
        "adj_close": (close * 0.99).round(4), "volume": volume, "dividend_amount": dividend,
        "split_coefficient": np.ones(len(dates)),
    })


class FakeProviderServer(ScriptedServer):
    thread_name = "fake-provider"

    def __init__(self, *, api_keys: tuple[str, ...] = ("TESTKEY-123456",)) -> None:
        self.api_keys = set(api_keys)
        self.data: dict[str, pd.DataFrame] = {}
        self.news: dict[str, list[dict]] = {}
        self.overviews: dict[str, dict] = {}  # ticker -> its OVERVIEW reply (see ``overview_item``)
        # Polygon: bars as Polygon serves them today (split-adjusted): ticker, date, open..volume
        self.polygon_bars = pd.DataFrame(columns=["ticker", "date", "open", "high", "low", "close", "volume"])
        self.polygon_splits: list[dict] = []  # {"ticker", "execution_date", "split_from", "split_to"}
        self.polygon_dividends: list[dict] = []  # {"ticker", "ex_dividend_date", "cash_amount", ...}
        self.polygon_page_size = 1000
        self.polygon_snapshots: dict[str, dict] = {}  # ticker -> {"ticker", "day", "lastTrade", "updated", ...}
        super().__init__()

    # -- control ------------------------------------------------------------------------------------
    @property
    def alphavantage_url(self) -> str:
        return f"{self.base_url}/query"

    def add_symbol(self, symbol: str, bars: pd.DataFrame) -> None:
        self.data[symbol.upper()] = bars.sort_values("date").reset_index(drop=True)

    # -- routing ------------------------------------------------------------------------------------
    def _route(self, path: str, params: dict[str, str]) -> tuple[str, str | None]:
        if path.rstrip("/") == "/query":
            return "alphavantage", (params.get("symbol") or params.get("tickers") or "").upper()
        if path.rstrip("/") == "/q/d/l":
            return "stooq", params.get("s", "").split(".")[0].replace("-", ".").upper()
        if path.startswith("/tiingo/daily/"):
            return "tiingo", path.split("/")[3].replace("-", ".").upper()
        if path.startswith(("/v2/aggs/", "/v3/reference/", "/v2/snapshot/")):
            return "polygon", path.split("/")[4].upper() if path.startswith("/v2/aggs/ticker/") else params.get("ticker")
        return "unknown", None

    def _answer(self, provider: str, path: str, params: dict[str, str], headers: dict[str, str],
                symbol: str | None) -> tuple[int, bytes, dict[str, str]]:
        if provider == "alphavantage":
            return self._alphavantage(params, symbol)
        if provider == "stooq":
            return self._stooq(params, symbol)
        if provider == "tiingo":
            return self._tiingo(params, headers, symbol)
        if provider == "polygon":
            return self._polygon(path, params, headers, symbol)
        return 404, b"not found", {"Content-Type": "text/plain"}

    # -- Alpha Vantage ------------------------------------------------------------------------------
    def _alphavantage(self, params: dict[str, str], symbol: str) -> tuple[int, bytes, dict[str, str]]:
        if params.get("apikey") not in self.api_keys:
            return self._json({"Error Message": AV_INVALID_KEY})
        function = params.get("function")
        if function == "NEWS_SENTIMENT":
            feed = [item for item in self.news.get(symbol, [])
                    if not params.get("time_from") or item["time_published"] >= params["time_from"]]
            return self._json({"items": str(len(feed)), "sentiment_score_definition": "x <= -0.35: Bearish; ...",
                               "relevance_score_definition": "0 < x <= 1", "feed": feed})
        if function == "OVERVIEW" and symbol in self.overviews:
            return self._json(self.overviews[symbol])
        bars = self.data.get(symbol)
        if bars is None:
            return self._json({} if function == "OVERVIEW" else {"Error Message": AV_INVALID_CALL})
        if function == "OVERVIEW":
            return self._json({"Symbol": symbol, "AssetType": "Common Stock", "Name": f"{symbol} Inc",
                               "Exchange": "NASDAQ", "PERatio": "28.5", "EPS": "6.1", "DividendYield": "None"})
        if function not in ("TIME_SERIES_DAILY_ADJUSTED", "TIME_SERIES_DAILY"):
            return self._json({"Error Message": AV_INVALID_CALL})
        adjusted = function == "TIME_SERIES_DAILY_ADJUSTED"
        compact = params.get("outputsize", "compact") == "compact"
        rows = bars.tail(100) if compact else bars
        series = {}
        for row in rows.iloc[::-1].itertuples(index=False):
            bar = {"1. open": f"{row.open:.4f}", "2. high": f"{row.high:.4f}", "3. low": f"{row.low:.4f}",
                   "4. close": f"{row.close:.4f}"}
            if adjusted:
                bar.update({"5. adjusted close": f"{row.adj_close:.4f}", "6. volume": str(int(row.volume)),
                            "7. dividend amount": f"{row.dividend_amount:.4f}",
                            "8. split coefficient": f"{row.split_coefficient:.1f}"})
            else:
                bar["5. volume"] = str(int(row.volume))
            series[row.date.strftime("%Y-%m-%d")] = bar
        meta = {
            "1. Information": ("Daily Time Series with Splits and Dividend Events" if adjusted
                               else "Daily Prices (open, high, low, close) and Volumes"),
            "2. Symbol": symbol,
            "3. Last Refreshed": bars["date"].iloc[-1].strftime("%Y-%m-%d"),
            "4. Output Size": "Compact" if compact else "Full size",
            "5. Time Zone": "US/Eastern",
        }
        return self._json({"Meta Data": meta, "Time Series (Daily)": series})

    # -- Stooq --------------------------------------------------------------------------------------
    def _stooq(self, params: dict[str, str], symbol: str) -> tuple[int, bytes, dict[str, str]]:
        bars = self.data.get(symbol)
        text_headers = {"Content-Type": "text/plain; charset=utf-8"}
        if bars is None:
            return 200, b"No data", text_headers
        if "d1" in params:
            bars = bars[bars["date"] >= pd.Timestamp(params["d1"])]
        if "d2" in params:
            bars = bars[bars["date"] <= pd.Timestamp(params["d2"])]
        if bars.empty:
            return 200, b"No data", text_headers
        lines = ["Date,Open,High,Low,Close,Volume"] + [
            f"{r.date:%Y-%m-%d},{r.open:.4f},{r.high:.4f},{r.low:.4f},{r.close:.4f},{int(r.volume)}"
            for r in bars.itertuples(index=False)
        ]
        return 200, ("\r\n".join(lines) + "\r\n").encode(), {"Content-Type": "text/csv",
                                                          "Content-Disposition": f"attachment;filename={params['s']}_d.csv"}

    # -- Tiingo -------------------------------------------------------------------------------------
    def _tiingo(self, params: dict[str, str], headers: dict[str, str], symbol: str) -> tuple[int, bytes, dict[str, str]]:
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        token = auth.removeprefix("Token ").strip() if auth else params.get("token", "")
        if token not in self.api_keys:
            return self._json({"detail": "Invalid token."}, status=401)
        bars = self.data.get(symbol)
        if bars is None:
            return self._json({"detail": f"Error: Ticker '{symbol}' not found"}, status=404)
        if "startDate" in params:
            bars = bars[bars["date"] >= pd.Timestamp(params["startDate"])]
        else:  # Tiingo without startDate: the latest day only
            bars = bars.tail(1)
        if "endDate" in params:
            bars = bars[bars["date"] <= pd.Timestamp(params["endDate"])]
        payload = [
            {"date": f"{r.date:%Y-%m-%d}T00:00:00.000Z", "close": r.close, "high": r.high, "low": r.low,
             "open": r.open, "volume": int(r.volume), "adjClose": r.adj_close, "adjHigh": r.high * 0.99,
             "adjLow": r.low * 0.99, "adjOpen": r.open * 0.99, "adjVolume": int(r.volume),
             "divCash": r.dividend_amount, "splitFactor": r.split_coefficient}
            for r in bars.itertuples(index=False)
        ]
        return self._json(payload)


    # -- Polygon ------------------------------------------------------------------------------------
    def _polygon(self, path: str, params: dict[str, str], headers: dict[str, str],
                 symbol: str | None) -> tuple[int, bytes, dict[str, str]]:
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth else params.get("apiKey", "")
        if token not in self.api_keys:
            return self._json({"status": "ERROR", "request_id": "r1", "error": "Unknown API Key"}, status=401)
        if path.startswith("/v2/aggs/grouped/locale/us/market/stocks/"):
            day = pd.Timestamp(path.rsplit("/", 1)[1])
            rows = self.polygon_bars[pd.to_datetime(self.polygon_bars["date"]) == day]
            payload: dict = {"queryCount": len(rows), "resultsCount": len(rows), "adjusted": True,
                             "status": "OK", "request_id": "r2"}
            if len(rows):
                payload["results"] = [self._polygon_bar(r, with_ticker=True) for r in rows.itertuples(index=False)]
            return self._json(payload)
        if path.startswith("/v2/aggs/ticker/"):
            parts = path.split("/")
            lo, hi = pd.Timestamp(parts[-2]), pd.Timestamp(parts[-1])
            dates = pd.to_datetime(self.polygon_bars["date"])
            rows = self.polygon_bars[(self.polygon_bars["ticker"] == symbol) & (dates >= lo) & (dates <= hi)]
            return self._json({"ticker": symbol, "queryCount": len(rows), "resultsCount": len(rows),
                               "adjusted": True, "status": "OK", "request_id": "r3",
                               "results": [self._polygon_bar(r, with_ticker=False)
                                           for r in rows.sort_values("date").itertuples(index=False)]})
        if path == "/v2/snapshot/locale/us/markets/stocks/tickers":
            wanted = [t for t in params.get("tickers", "").split(",") if t]
            items = [self.polygon_snapshots[t] for t in (wanted or sorted(self.polygon_snapshots))
                     if t in self.polygon_snapshots]
            return self._json({"status": "OK", "request_id": "r6", "count": len(items), "tickers": items})
        if path in ("/v3/reference/splits", "/v3/reference/dividends"):
            splits = path.endswith("splits")
            items, key = (self.polygon_splits, "execution_date") if splits else (self.polygon_dividends,
                                                                                  "ex_dividend_date")
            cursor = int(params.get("cursor", "0"))
            if cursor:  # the filters travel inside the cursor, as Polygon's do
                params = json.loads(urllib.parse.unquote(params["filters"]))
            chosen = [i for i in items
                      if (not params.get(f"{key}.gte") or i[key] >= params[f"{key}.gte"])
                      and (not params.get(f"{key}.lte") or i[key] <= params[f"{key}.lte"])
                      and (not params.get("ticker") or i["ticker"] == params["ticker"])]
            size = min(int(params.get("limit", 10)), self.polygon_page_size)
            page = chosen[cursor : cursor + size]
            payload = {"status": "OK", "request_id": "r4", "results": page}
            if cursor + size < len(chosen):
                filters = urllib.parse.quote(json.dumps({**params, "limit": str(size)}))
                payload["next_url"] = f"{self.base_url}{path}?cursor={cursor + size}&filters={filters}"
            return self._json(payload)
        return self._json({"status": "NOT_FOUND", "request_id": "r5", "message": "Not found"}, status=404)

    @staticmethod
    def _polygon_bar(row, *, with_ticker: bool) -> dict:
        start = pd.Timestamp(row.date).tz_localize("America/New_York").tz_convert("UTC")
        bar = {"o": row.open, "h": row.high, "l": row.low, "c": row.close, "v": float(row.volume),
               "vw": round((row.high + row.low + row.close) / 3, 4), "t": int(start.timestamp() * 1000), "n": 1000}
        return {"T": row.ticker, **bar} if with_ticker else bar


def snapshot_item(ticker: str, *, price: float, time: pd.Timestamp, open: float | None = None,  # noqa: A002
                  high: float | None = None, low: float | None = None, volume: float = 0.0,
                  size: int = 100) -> dict:
    """One ticker of a Polygon snapshot reply: the day bar so far and the last trade at ``time`` (aware)."""
    ns = int(pd.Timestamp(time).value)
    o = price if open is None else open
    h = max(o, price) if high is None else high
    lo = min(o, price) if low is None else low
    return {
        "ticker": ticker, "todaysChange": 0.0, "todaysChangePerc": 0.0, "updated": ns,
        "day": {"o": o, "h": h, "l": lo, "c": price, "v": volume, "vw": round((h + lo + price) / 3, 4)},
        "lastTrade": {"c": [14, 41], "i": "71675577320245", "p": price, "s": size, "t": ns, "x": 4},
        "min": {"av": volume, "o": price, "h": price, "l": price, "c": price, "v": size, "t": ns // 10**6},
        "prevDay": {"o": o, "h": h, "l": lo, "c": o, "v": volume, "vw": o},
    }


def overview_item(symbol: str, *, pe: str = "28.5", eps: str = "6.1", market_cap: str = "2950000000000",
                  dividend_yield: str = "0.0044", sector: str = "TECHNOLOGY") -> dict:
    """One Alpha Vantage ``OVERVIEW`` reply (every value a string, "None" when unknown, as it writes them)."""
    return {
        "Symbol": symbol, "AssetType": "Common Stock", "Name": f"{symbol} Inc", "Exchange": "NASDAQ",
        "Currency": "USD", "Country": "USA", "Sector": sector, "Industry": "ELECTRONIC COMPUTERS",
        "FiscalYearEnd": "September", "LatestQuarter": "2024-03-31", "MarketCapitalization": market_cap,
        "EBITDA": "129629004000", "PERatio": pe, "PEGRatio": "2.15", "BookValue": "4.38", "DividendPerShare": "0.96",
        "DividendYield": dividend_yield, "EPS": eps, "ProfitMargin": "0.262", "TrailingPE": pe,
        "ForwardPE": "26.67", "52WeekHigh": "199.62", "52WeekLow": "163.67", "SharesOutstanding": "15441900000",
    }


def news_item(title: str, published: str, *, ticker: str, source: str = "Reuters") -> dict:
    """One Alpha Vantage NEWS_SENTIMENT feed item."""
    return {
        "title": title, "url": f"https://example.com/{zlib.crc32(title.encode())}", "time_published": published,
        "authors": ["Staff"], "summary": title, "banner_image": None, "source": source,
        "category_within_source": "n/a", "source_domain": "example.com",
        "topics": [{"topic": "Earnings", "relevance_score": "0.9"}],
        "overall_sentiment_score": 0.12, "overall_sentiment_label": "Neutral",
        "ticker_sentiment": [{"ticker": ticker, "relevance_score": "0.8", "ticker_sentiment_score": "0.25",
                              "ticker_sentiment_label": "Somewhat-Bullish"}],
    }


def business_days_before(end: date, n: int) -> date:
    return (pd.Timestamp(end) - pd.offsets.BDay(n)).date() if n else end


__all__ = ["FakeProviderServer", "LoggedRequest", "Reply", "ScriptedServer", "business_days_before", "make_bars", "news_item",
           "overview_item", "snapshot_item"]
