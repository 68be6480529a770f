"""Stooq CSV adapter: ``https://stooq.com/q/d/l/?s=aapl.us&i=d[&d1=YYYYMMDD&d2=YYYYMMDD]``.

The reply is a CSV with header ``Date,Open,High,Low,Close,Volume`` (prices adjusted for splits and
dividends by Stooq, so ``adj_close`` = ``close``); an unknown symbol gets the body ``No data``; a
used-up daily quota gets ``Exceeded the daily hits limit``. US tickers take the ``.us`` suffix, with
class shares as ``brk-b.us``. Incremental updates ask for ``d1 = since + 1 day`` .. ``d2 = today``.
No API key.
"""

from __future__ import annotations

import io
from datetime import date, timedelta

import pandas as pd

from .base import BadResponseError, HttpProvider, NotFoundError, RateLimitedError, empty_prices, finish_prices
from .http import HttpResponse

STOOQ_COLUMNS = {"Date": "date", "Open": "open", "High": "high", "Low": "low", "Close": "close", "Volume": "volume"}


def stooq_symbol(symbol: str, market: str = "us") -> str:
    symbol = symbol.strip().lower().replace(".", "-").replace("/", "-")
    if "." in symbol or symbol.startswith("^"):
        return symbol
    return f"{symbol}.{market}" if market else symbol


class StooqProvider(HttpProvider):
    name = "stooq"
    supports_date_range = True

    def __init__(self, *args, market: str = "us", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.market = market

    def request_params(self, symbol: str, since: date | None) -> dict[str, str]:
        params = {"s": stooq_symbol(symbol, self.market), "i": "d"}
        if since is not None:
            params["d1"] = (since + timedelta(days=1)).strftime("%Y%m%d")
            params["d2"] = self._today().strftime("%Y%m%d")
        return params

    def fetch_daily(self, symbol: str, *, since: date | None = None) -> pd.DataFrame:
        symbol = symbol.strip().upper()
        if since is not None and since >= self._today():
            return empty_prices()  # nothing newer can exist: save the call

        def parse(response: HttpResponse) -> pd.DataFrame:
            return self.parse_csv(response, symbol, ranged=since is not None)

        frame = self.request(f"{self.config.base_url}/q/d/l/", endpoint="q/d/l", symbol=symbol,
                             params=self.request_params(symbol, since), parse=parse)
        return finish_prices(frame, since)

    @staticmethod
    def parse_csv(response: HttpResponse, symbol: str, *, ranged: bool = False) -> pd.DataFrame:
        text = response.text().lstrip("\ufeff").strip()
        low = text.lower()
        if not text or low.startswith("no data"):
            # Stooq says "No data" both for an unknown symbol and for an empty date range. An
            # incremental (d1/d2) query is only made for a ticker fetched before: nothing new yet.
            if ranged:
                return pd.DataFrame(columns=["date", "open", "high", "low", "close", "volume", "adj_close"])
            raise NotFoundError("unknown ticker at Stooq (No data)", symbol=symbol)
        if "exceeded the daily hits limit" in low:
            raise RateLimitedError("Stooq daily hits limit exceeded", symbol=symbol, retryable=False)
        first = text.splitlines()[0]
        if not first.startswith("Date,"):
            raise BadResponseError(f"Stooq reply is not the CSV download: {first[:80]!r}", symbol=symbol)
        frame = pd.read_csv(io.StringIO(text))
        missing = [c for c in ("Date", "Open", "High", "Low", "Close") if c not in frame.columns]
        if missing:
            raise BadResponseError(f"Stooq CSV lacks {missing}", symbol=symbol)
        frame = frame.rename(columns=STOOQ_COLUMNS)[[v for k, v in STOOQ_COLUMNS.items() if k in frame.columns]]
        if "volume" not in frame:
            frame["volume"] = float("nan")
        frame["adj_close"] = frame["close"]
        frame["date"] = pd.to_datetime(frame["date"], format="%Y-%m-%d")
        return frame
