"""Tiingo end-of-day adapter (https://www.tiingo.com/documentation/end-of-day).

``GET {base}/tiingo/daily/{ticker}/prices?startDate=YYYY-MM-DD&format=json`` with the key in the
``Authorization: Token <key>`` header (documented alternative to ``?token=``; it keeps the key out
of URLs and access logs). Reply: a JSON list of ``{"date": "2024-01-02T00:00:00.000Z", "open",
"high", "low", "close", "volume", "adjOpen", "adjHigh", "adjLow", "adjClose", "adjVolume",
"divCash", "splitFactor"}``; open/high/low/close are raw, ``adjClose`` split- and
dividend-adjusted. Unknown ticker: HTTP 404 ``{"detail": "Error: Ticker 'XXX' not found"}``; bad
key: 401/403 ``{"detail": "Invalid token."}``.

Incremental updates send ``startDate = since + 1 day`` so the reply holds only new rows.
"""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd

from .base import (
    AuthError,
    BadResponseError,
    HttpProvider,
    NotFoundError,
    RateLimitedError,
    empty_prices,
    finish_prices,
)
from .http import HttpResponse

TIINGO_FIELDS = {
    "date": "date",
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "adjClose": "adj_close",
    "volume": "volume",
    "divCash": "dividend_amount",
    "splitFactor": "split_coefficient",
}
HISTORY_START = date(1962, 1, 2)


def tiingo_symbol(symbol: str) -> str:
    return symbol.strip().upper().replace(".", "-").replace("/", "-")


def _raise_for_detail(detail: str, symbol: str) -> None:
    low = detail.lower()
    if "not found" in low:
        raise NotFoundError(f"unknown ticker at Tiingo: {detail[:160]}", symbol=symbol)
    if "token" in low or "authoriz" in low or "permission" in low:
        raise AuthError("Tiingo rejected the API token", symbol=symbol)
    if "allocation" in low or "rate" in low or "limit" in low:
        raise RateLimitedError(f"Tiingo request allocation used up: {detail[:160]}", symbol=symbol,
                               retryable=False)
    raise BadResponseError(f"Tiingo: {detail[:160]}", symbol=symbol)


class TiingoProvider(HttpProvider):
    name = "tiingo"
    supports_date_range = True

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.config.api_key}", "Content-Type": "application/json"}

    def request_params(self, since: date | None) -> dict[str, str]:
        start = HISTORY_START if since is None else since + timedelta(days=1)
        return {"startDate": start.isoformat(), "format": "json", "resampleFreq": "daily"}

    def fetch_daily(self, symbol: str, *, since: date | None = None) -> pd.DataFrame:
        symbol = symbol.strip().upper()
        if not self.config.api_key:
            raise AuthError("TIINGO_API_KEY is not set", symbol=symbol, provider=self.name)
        if since is not None and since >= self._today():
            return empty_prices(with_actions=True)

        def parse(response: HttpResponse) -> pd.DataFrame:
            return self.parse_prices(response, symbol)

        url = f"{self.config.base_url}/tiingo/daily/{tiingo_symbol(symbol)}/prices"
        frame = self.request(url, endpoint="daily/prices", symbol=symbol, params=self.request_params(since),
                             headers=self.headers(), parse=parse)
        return finish_prices(frame, since, with_actions=True)

    def _classify_status(self, response: HttpResponse, symbol: str | None):
        error = super()._classify_status(response, symbol)
        if error is not None and response.status in (400, 404):
            try:
                detail = str(response.json().get("detail", ""))
            except (ValueError, AttributeError):
                detail = ""
            if "not found" in detail.lower() or response.status == 404:
                return NotFoundError(f"unknown ticker at Tiingo: {self.redact(detail)[:160] or 'HTTP 404'}",
                                     symbol=symbol, provider=self.name, status=response.status)
        return error

    @staticmethod
    def parse_prices(response: HttpResponse, symbol: str) -> pd.DataFrame:
        try:
            payload = response.json()
        except ValueError as exc:
            raise BadResponseError(f"Tiingo reply is not JSON: {exc}", symbol=symbol) from None
        if isinstance(payload, dict):
            _raise_for_detail(str(payload.get("detail", payload)), symbol)
        if not isinstance(payload, list):
            raise BadResponseError("Tiingo reply is not a JSON list", symbol=symbol)
        if not payload:
            return pd.DataFrame(columns=list(TIINGO_FIELDS.values()))
        frame = pd.DataFrame(payload)
        missing = [k for k in ("date", "open", "high", "low", "close") if k not in frame.columns]
        if missing:
            raise BadResponseError(f"Tiingo bars lack {missing}", symbol=symbol)
        frame = frame.rename(columns=TIINGO_FIELDS)[[v for k, v in TIINGO_FIELDS.items() if k in frame.columns]]
        frame["date"] = pd.to_datetime(frame["date"], utc=True).dt.tz_localize(None)
        return frame
