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

import json
import threading
import time
import urllib.parse
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.fakes.provider_server import LoggedRequest, Reply

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


class FakeStockTwitsServer:
    def __init__(self, *, page_size: int = 30) -> None:
        self.messages: dict[str, list[dict]] = {}
        self.page_size = page_size
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self.requests: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-stocktwits", daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/api/2"

    def script(self, symbol: str, *replies: Reply) -> None:
        with self._lock:
            self._scripts[symbol.upper()].extend(replies)

    def count(self, symbol: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if symbol is None or r.symbol == symbol.upper())

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeStockTwitsServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
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
                except (BrokenPipeError, ConnectionResetError):
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
        symbol = None
        if path.startswith(STREAM_PREFIX) and path.endswith(".json"):
            symbol = path[len(STREAM_PREFIX):-len(".json")].upper()
        with self._lock:
            self.requests.append(LoggedRequest("stocktwits", path, params, headers, symbol, time.monotonic()))
            queue = self._scripts.get(symbol or "")
            reply = queue.popleft() if queue else None
        if reply is not None:
            if reply.delay:
                time.sleep(reply.delay)
            if not reply.passthrough:
                return reply.status, reply.body, reply.headers
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
