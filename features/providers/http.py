"""Shared HTTP client (standard library ``urllib``: no extra dependency) and secret redaction.

``HttpClient.get`` never raises for an HTTP status: it returns an ``HttpResponse`` whatever the
status, and raises ``TransportError`` only when no response came back (timeout, refused connection,
DNS failure, broken TLS). Retrying and classification live in ``base.PriceProvider.request``.
"""

from __future__ import annotations

import email.utils
import gzip
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Query parameters and headers that carry credentials, whatever the provider.
SECRET_PARAMS = ("apikey", "api_key", "token", "key", "access_key", "apiKey")
_SECRET_PARAM_RE = re.compile(r"(?i)\b(" + "|".join(re.escape(p) for p in SECRET_PARAMS) + r")=([^&\s#\"']+)")
REDACTED = "***"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def redact(text: Any, secrets: Iterable[str] = ()) -> str:
    """Remove API keys from ``text``: every known secret value, and any ``apikey=``/``token=`` value."""
    out = str(text)
    for secret in secrets:
        if secret and len(secret) >= 3:
            out = out.replace(secret, REDACTED)
            quoted = urllib.parse.quote(secret, safe="")
            if quoted != secret:
                out = out.replace(quoted, REDACTED)
    return _SECRET_PARAM_RE.sub(lambda m: f"{m.group(1)}={REDACTED}", out)


class TransportError(Exception):
    """No HTTP response. ``kind`` is ``timeout`` or ``connection``."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}")


@dataclass
class HttpResponse:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    url: str = ""
    seconds: float = 0.0

    def text(self, encoding: str = "utf-8") -> str:
        return self.body.decode(encoding, errors="replace")

    def json(self) -> Any:
        import json

        return json.loads(self.body.decode("utf-8"))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def build_url(url: str, params: Mapping[str, Any] | None) -> str:
    if not params:
        return url
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    return f"{url}{'&' if '?' in url else '?'}{query}"


class _CaseInsensitive(dict):
    def get(self, key, default=None):  # type: ignore[override]
        return super().get(key.lower(), default)

    def __getitem__(self, key):
        return super().__getitem__(key.lower())

    def __contains__(self, key):
        return super().__contains__(str(key).lower())


class HttpClient:
    """Minimal GET client on ``urllib`` with gzip support, a User-Agent and per-call timeout."""

    def __init__(self, *, user_agent: str = "investml/0.1", max_bytes: int = 200 * 1024 * 1024) -> None:
        self.user_agent = user_agent
        self.max_bytes = max_bytes
        self._opener = urllib.request.build_opener()  # honours http(s)_proxy / no_proxy from the environment
        self._direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never proxied

    def get(
        self,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> HttpResponse:
        full_url = build_url(url, params)
        request = urllib.request.Request(full_url, method="GET")
        request.add_header("User-Agent", self.user_agent)
        request.add_header("Accept-Encoding", "gzip")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        started = time.monotonic()
        try:
            try:
                host = urllib.parse.urlsplit(full_url).hostname or ""
                opener = self._direct if host in _LOOPBACK else self._opener
                raw = opener.open(request, timeout=timeout)
            except urllib.error.HTTPError as exc:  # a real HTTP reply with an error status
                raw = exc
            with raw:
                status = int(raw.status if hasattr(raw, "status") and raw.status else raw.getcode())
                resp_headers = _CaseInsensitive({k.lower(): v for k, v in raw.headers.items()})
                body = raw.read(self.max_bytes + 1) or b""
        except TimeoutError as exc:
            raise TransportError("timeout", f"no reply within {timeout:g}s") from exc
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError | socket.timeout):
                raise TransportError("timeout", f"no reply within {timeout:g}s") from exc
            raise TransportError("connection", str(reason)) from exc
        except (ConnectionError, OSError) as exc:
            raise TransportError("connection", str(exc)) from exc
        if resp_headers.get("content-encoding", "").lower() == "gzip" and body:
            try:
                body = gzip.decompress(body)
            except OSError:
                pass
        return HttpResponse(status=status, body=body, headers=resp_headers, url=full_url,
                            seconds=time.monotonic() - started)
