"""StockTwits adapter: a ticker's public message stream (https://api.stocktwits.com/developers/docs).

``GET {base}/streams/symbol/{SYMBOL}.json[?since=ID][&max=ID]`` answers the newest 30 messages::

    {"response": {"status": 200}, "symbol": {...},
     "cursor": {"more": true, "since": <newest id on the page>, "max": <oldest id on the page>},
     "messages": [{"id", "body", "created_at": "2020-10-18T23:59:59Z", "user": {"id", "username"},
                   "symbols": [{"symbol": "AAPL"}, ...], "entities": {"sentiment": {"basic": "Bullish"} | null}}]}

``since`` asks for messages newer than an id, ``max`` for messages up to an id: ``fetch_posts`` pages
back from the newest with ``max`` = the oldest id seen (duplicates dropped, so an inclusive or an
exclusive ``max`` both work) until it reaches ``since_id``, the server says there is no more, a page
brings nothing new, or ``max_pages`` pages were read. Every page is one metered request through
``HttpProvider.request`` (budget, rate limiter, retries on 429/5xx).

Errors: 404 (unknown symbol) -> NotFoundError; 429 -> RateLimitedError (retried, ``Retry-After``
honoured); a reply whose ``response.status`` is not 200 -> classified the same way.
The unauthenticated API allows about 200 requests an hour per address: the default limit is 3 a
minute. Framework-free: no Django here; ``features.services.social`` stores what this returns.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pandas as pd

from .base import (
    BadResponseError,
    HttpProvider,
    NotFoundError,
    RateLimitedError,
)
from .http import HttpResponse

POST_COLUMNS = ["post_id", "created_at", "body", "author", "symbols", "label"]
PAGE_SIZE = 30  # what the public stream answers per request
DEFAULT_MAX_PAGES = 5


def _payload(response: HttpResponse, symbol: str) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError as exc:
        raise BadResponseError(f"StockTwits reply is not JSON: {exc}", symbol=symbol) from None
    if not isinstance(payload, dict):
        raise BadResponseError("StockTwits reply is not a JSON object", symbol=symbol)
    meta = payload.get("response")
    try:
        status = int(meta.get("status", 200)) if isinstance(meta, dict) else 200
    except (TypeError, ValueError):
        status = 200
    if status != 200:
        errors = payload.get("errors") or []
        detail = "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors)[:160]
        if status == 404:
            raise NotFoundError(f"unknown symbol at StockTwits: {detail or 'HTTP 404'}", symbol=symbol)
        if status == 429:
            raise RateLimitedError(f"StockTwits rate limit: {detail or 'HTTP 429'}", symbol=symbol, retryable=True)
        raise BadResponseError(f"StockTwits status {status}: {detail}", symbol=symbol)
    if not isinstance(payload.get("messages"), list):
        raise BadResponseError("StockTwits reply has no 'messages' list", symbol=symbol)
    return payload


def parse_messages(messages: list[Any]) -> pd.DataFrame:
    """StockTwits message objects -> POST_COLUMNS (``created_at`` aware UTC, ``label`` "bullish",
    "bearish" or "", ``symbols`` a list of upper-case symbols). Messages without an id, a time or a
    body are left out."""
    rows = []
    for m in messages:
        if not isinstance(m, dict) or m.get("id") is None:
            continue
        user = m.get("user") if isinstance(m.get("user"), dict) else {}
        entities = m.get("entities") if isinstance(m.get("entities"), dict) else {}
        sentiment = entities.get("sentiment") if isinstance(entities.get("sentiment"), dict) else {}
        symbols = [str(s.get("symbol", "")).strip().upper() for s in (m.get("symbols") or [])
                   if isinstance(s, dict) and s.get("symbol")]
        rows.append({
            "post_id": str(m["id"]),
            "created_at": m.get("created_at"),
            "body": str(m.get("body") or ""),
            "author": str(user.get("id") if user.get("id") is not None else user.get("username") or ""),
            "symbols": symbols,
            "label": str(sentiment.get("basic") or "").strip().lower(),
        })
    frame = pd.DataFrame(rows, columns=POST_COLUMNS)
    frame["created_at"] = pd.to_datetime(frame["created_at"], errors="coerce", utc=True)
    frame["label"] = frame["label"].where(frame["label"].isin(["bullish", "bearish"]), "")
    frame = frame.dropna(subset=["created_at"])
    return frame[frame["body"].str.strip() != ""].reset_index(drop=True)


class StockTwitsProvider(HttpProvider):
    name = "stocktwits"
    supports_social = True

    def fetch_daily(self, symbol: str, *, since: date | None = None) -> pd.DataFrame:
        raise NotImplementedError("stocktwits has no price endpoint (it is a social provider)")

    def stream_url(self, symbol: str) -> str:
        return f"{self.config.base_url}/streams/symbol/{symbol}.json"

    def fetch_page(self, symbol: str, *, since_id: int | None = None,
                   max_id: int | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
        """One page of ``symbol``'s stream: (POST_COLUMNS frame, cursor)."""
        symbol = symbol.strip().upper()
        params: dict[str, Any] = {}
        if since_id is not None:
            params["since"] = int(since_id)
        if max_id is not None:
            params["max"] = int(max_id)
        if self.config.api_key:
            params["access_token"] = self.config.api_key

        def parse(response: HttpResponse) -> tuple[pd.DataFrame, dict[str, Any]]:
            payload = _payload(response, symbol)
            cursor = payload.get("cursor") if isinstance(payload.get("cursor"), dict) else {}
            return parse_messages(payload["messages"]), cursor

        return self.request(self.stream_url(symbol), endpoint="streams/symbol", symbol=symbol, params=params,
                            parse=parse)

    def fetch_posts(self, symbol: str, *, since_id: int | None = None,
                    max_pages: int = DEFAULT_MAX_PAGES) -> pd.DataFrame:
        """Messages of ``symbol``'s stream newer than ``since_id`` (the newest page only when None, up to
        ``max_pages`` pages back otherwise), newest first, one row per message id."""
        symbol = symbol.strip().upper()
        pages: list[pd.DataFrame] = []
        seen: set[str] = set()
        max_id: int | None = None
        for _page in range(max(1, int(max_pages))):
            frame, cursor = self.fetch_page(symbol, since_id=since_id, max_id=max_id)
            frame = frame[~frame["post_id"].isin(seen)]
            if since_id is not None:
                frame = frame[pd.to_numeric(frame["post_id"], errors="coerce") > since_id]
            if frame.empty:
                break
            seen.update(frame["post_id"])
            pages.append(frame)
            ids = pd.to_numeric(frame["post_id"], errors="coerce").dropna()
            oldest = int(cursor.get("max") or (ids.min() if len(ids) else 0))
            if not cursor.get("more") or not oldest or since_id is None or oldest <= since_id:
                # the first fetch of a ticker takes its newest page only: history is a file's job
                break
            max_id = oldest
        if not pages:
            return parse_messages([])
        out = pd.concat(pages, ignore_index=True)
        return out.drop_duplicates("post_id").reset_index(drop=True)
