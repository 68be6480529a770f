"""A local stand-in for StockTwits' public symbol streams, for tests without the internet.

``FakeStockTwitsServer`` runs ``http.server`` in a thread on 127.0.0.1 (port 0) and answers
``GET /api/2/streams/symbol/<SYMBOL>.json[?since=ID][&max=ID][&limit=N]`` as StockTwits documents it:
the newest ``page_size`` (30) messages with ``id > since`` and ``id <= max``, newest first, and
``{"cursor": {"more", "since": newest id on the page, "max": oldest id on the page}}``; an unknown
symbol answers 404 ``{"response": {"status": 404}, "errors": [{"message": "Symbol not found"}]}``.

``server.messages[SYMBOL]`` holds the stream (``stocktwits_message`` builds one message);
``server.script(SYMBOL, Reply...)`` queues replies served before the normal answer (a 429 with
``Retry-After``, a 500, a slow reply), as ``tests.fakes.provider_server`` does; every request is
logged in ``server.requests``.
"""

from __future__ import annotations

from tests.fakes.provider_server import ScriptedServer

STREAM_PREFIX = "/api/2/streams/symbol/"


def stocktwits_message(post_id: int, body: str, created_at: str, *, symbols: tuple[str, ...] = ("AAPL",),
                       user_id: int = 1, username: str = "trader", sentiment: str | None = None) -> dict:
    """One message as the stream returns it (``sentiment``: "Bullish", "Bearish" or None)."""
    return {
        "id": post_id, "body": body, "created_at": created_at,
        "user": {"id": user_id, "username": username, "name": username.title(), "followers": 10},
        "source": {"id": 1, "title": "StockTwits", "url": "https://stocktwits.com"},
        "symbols": [{"id": 100 + i, "symbol": s, "title": f"{s} Inc."} for i, s in enumerate(symbols)],
        "entities": {"sentiment": {"basic": sentiment} if sentiment else None},
    }


class FakeStockTwitsServer(ScriptedServer):
    thread_name = "fake-stocktwits"

    def __init__(self, *, page_size: int = 30) -> None:
        self.messages: dict[str, list[dict]] = {}
        self.page_size = page_size
        super().__init__()

    @property
    def base_url(self) -> str:
        return f"{super().base_url}/api/2"

    def _route(self, path: str, params: dict[str, str]) -> tuple[str, str | None]:
        if path.startswith(STREAM_PREFIX) and path.endswith(".json"):
            return "stocktwits", path[len(STREAM_PREFIX):-len(".json")].upper()
        return "stocktwits", None

    def _answer(self, provider: str, path: str, params: dict[str, str], headers: dict[str, str],
                symbol: str | None) -> tuple[int, bytes, dict[str, str]]:
        if symbol is None:
            return self._json({"response": {"status": 404}, "errors": [{"message": "Page not found"}]}, 404)
        if symbol not in self.messages:
            return self._json({"response": {"status": 404}, "errors": [{"message": "Symbol not found"}]}, 404)
        chosen = sorted(self.messages[symbol], key=lambda m: m["id"], reverse=True)
        if params.get("since"):
            chosen = [m for m in chosen if m["id"] > int(params["since"])]
        if params.get("max"):
            chosen = [m for m in chosen if m["id"] <= int(params["max"])]
        size = min(int(params.get("limit", self.page_size)), self.page_size)
        page = chosen[:size]
        cursor = {"more": len(chosen) > size, "since": page[0]["id"] if page else None,
                  "max": page[-1]["id"] if page else None}
        return self._json({"response": {"status": 200}, "symbol": {"id": 1, "symbol": symbol, "title": symbol},
                           "cursor": cursor, "messages": page})


__all__ = ["FakeStockTwitsServer", "stocktwits_message"]
