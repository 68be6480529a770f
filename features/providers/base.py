"""Provider interface, errors, call metering, budget and the retrying request loop.

Framework-free: nothing here imports Django. Adapters return pandas DataFrames and report every HTTP
request (retries included) as a ``CallRecord`` to an ``on_call`` callback, so that the caller can
write cost records. The API key never leaves this module unredacted: URLs in records, logs and
exception messages go through ``redact``.
"""

from __future__ import annotations

import abc
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, ClassVar, Protocol, runtime_checkable

import pandas as pd

from .http import HttpClient, HttpResponse, TransportError, parse_retry_after, redact
from .ratelimit import DailyLimitReached, RateLimiter, get_limiter

logger = logging.getLogger("investml.providers")

PRICE_COLUMNS = ["date", "open", "high", "low", "close", "adj_close", "volume"]
ACTION_COLUMNS = ["dividend_amount", "split_coefficient"]
NEWS_COLUMNS = ["ticker", "time_published", "title", "url", "source", "summary", "provider_score"]

# Reason codes ------------------------------------------------------------------------------------
NOT_FOUND = "not_found"
RATE_LIMITED = "rate_limited"
AUTH = "auth"
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
BAD_RESPONSE = "bad_response"
BUDGET_EXCEEDED = "budget_exceeded"
REASONS = (NOT_FOUND, RATE_LIMITED, AUTH, SERVER_ERROR, TIMEOUT, BAD_RESPONSE, BUDGET_EXCEEDED)


class ProviderError(Exception):
    """A provider call failed. ``reason`` is one of ``REASONS``; ``symbol`` names the ticker.

    ``str(error)`` is ``"<SYMBOL>: <detail>"`` (budget errors: the spec's exact message, the ticker is
    in ``symbol``). ``retryable`` tells the request loop whether another attempt can succeed.
    """

    reason: ClassVar[str] = BAD_RESPONSE
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        detail: str,
        *,
        symbol: str | None = None,
        provider: str | None = None,
        status: int | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.detail = detail
        self.symbol = symbol
        self.provider = provider
        self.status = status
        self.retryable = self.default_retryable if retryable is None else retryable
        self.retry_after = retry_after
        super().__init__(self._message())

    def _message(self) -> str:
        return f"{self.symbol}: {self.detail}" if self.symbol else self.detail

    def with_context(self, *, symbol: str | None, provider: str | None) -> ProviderError:
        if symbol and not self.symbol:
            self.symbol = symbol
        if provider and not self.provider:
            self.provider = provider
        self.args = (self._message(),)
        return self


class NotFoundError(ProviderError):
    reason = NOT_FOUND


class RateLimitedError(ProviderError):
    reason = RATE_LIMITED
    default_retryable = True


class AuthError(ProviderError):
    reason = AUTH


class ServerError(ProviderError):
    reason = SERVER_ERROR
    default_retryable = True


class ProviderTimeoutError(ProviderError):
    reason = TIMEOUT
    default_retryable = True


class BadResponseError(ProviderError):
    reason = BAD_RESPONSE


class BudgetExceededError(ProviderError):
    """``str()`` is exactly ``Daily cost limit exceeded: $12.50 > $10.00`` (spent + cost vs limit)."""

    reason = BUDGET_EXCEEDED

    def __init__(self, spent_plus_cost: float, limit: float, *, symbol: str | None = None, provider: str | None = None,
                 message: str | None = None):
        self.spent_plus_cost = float(spent_plus_cost)
        self.limit = float(limit)
        super().__init__(message or budget_message(spent_plus_cost, limit), symbol=symbol, provider=provider)

    def _message(self) -> str:
        return self.detail


ERROR_BY_REASON: dict[str, type[ProviderError]] = {
    cls.reason: cls
    for cls in (NotFoundError, RateLimitedError, AuthError, ServerError, ProviderTimeoutError, BadResponseError)
}


def budget_message(spent_plus_cost: float, limit: float) -> str:
    return "Daily cost limit exceeded: $%.2f > $%.2f" % (spent_plus_cost, limit)  # noqa: UP031 (spec wording)


def monthly_limit_message(spent_plus_cost: float, limit: float) -> str:
    return f"Monthly cost limit exceeded: ${spent_plus_cost:.2f} > ${limit:.2f}"


# Metering -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CallRecord:
    """One HTTP request (every attempt is its own record).

    ``status`` is the HTTP status, 0 when no response came back (timeout, connection error).
    ``error`` is the reason code when the attempt failed, None on success. ``url`` is redacted.
    """

    provider: str
    endpoint: str
    symbol: str | None
    status: int
    bytes: int
    seconds: float
    cost_usd: float
    attempt: int
    error: str | None = None
    url: str = ""


OnCall = Callable[[CallRecord], None]


# Budget -------------------------------------------------------------------------------------------
@runtime_checkable
class Budget(Protocol):
    def check(self, cost_usd: float) -> None:
        """Raise ``BudgetExceededError`` if spending ``cost_usd`` more would pass today's limit."""

    def charge(self, cost_usd: float) -> None:
        """Record ``cost_usd`` as spent."""


@dataclass
class DailyBudget:
    """Today's API budget: ``limit_usd`` (ML_DAILY_COST_LIMIT_USD) and what is already ``spent_usd``.

    The caller seeds ``spent_usd`` from its cost records of today; ``charge`` adds each request's cost.
    """

    limit_usd: float
    spent_usd: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def remaining_usd(self) -> float:
        return self.limit_usd - self.spent_usd

    def check(self, cost_usd: float) -> None:
        total = self.spent_usd + cost_usd
        # Compare in cents-rounded floats so that 1000 calls at $0.01 fit a $10.00 limit exactly.
        if round(total, 9) > round(self.limit_usd, 9):
            raise BudgetExceededError(total, self.limit_usd)

    def charge(self, cost_usd: float) -> None:
        with self._lock:
            self.spent_usd += cost_usd


@dataclass
class RemainingBudget:
    """Adapter for a callable returning the USD still available today (nothing known about spend)."""

    remaining: Callable[[], float]

    def check(self, cost_usd: float) -> None:
        left = float(self.remaining())
        if round(cost_usd, 9) > round(left, 9):
            raise BudgetExceededError(cost_usd, max(left, 0.0))

    def charge(self, cost_usd: float) -> None:  # the callable's owner tracks spend
        return None


@dataclass
class SharedBudget:
    """Today's API budget shared by every worker: the day's other tracked costs (``other_usd``,
    e.g. compute) plus the API spend all processes reserve in one ``CounterStore`` counter.

    ``check`` reserves the call's cost atomically (two workers cannot both take the last cent), so
    ``charge`` adds nothing; ``api_before_usd`` seeds the counter with API costs already recorded.
    """

    limit_usd: float
    store: Any
    key: str
    other_usd: float = 0.0
    api_before_usd: float = 0.0

    @property
    def spent_usd(self) -> float:
        """Today's tracked cost: the other categories plus the API spend every worker reserved."""
        return self.other_usd + max(self.store.value(self.key), self.api_before_usd)

    def check(self, cost_usd: float) -> None:
        room = self.limit_usd - self.other_usd
        taken = self.store.take(self.key, limit=room, amount=cost_usd, floor=self.api_before_usd)
        if taken is None:
            raise BudgetExceededError(self.spent_usd + cost_usd, self.limit_usd)

    def charge(self, cost_usd: float) -> None:  # reserved by ``check``
        return None


class _Unlimited:
    def check(self, cost_usd: float) -> None:
        return None

    def charge(self, cost_usd: float) -> None:
        return None


UNLIMITED = _Unlimited()


def as_budget(budget: Budget | Callable[[], float] | float | None) -> Budget:
    """None -> unlimited; a number -> DailyBudget(limit); a callable -> RemainingBudget; else as is."""
    if budget is None:
        return UNLIMITED
    if isinstance(budget, Budget):
        return budget
    if isinstance(budget, int | float):
        return DailyBudget(float(budget))
    if callable(budget):
        return RemainingBudget(budget)
    raise TypeError(f"not a budget: {type(budget).__name__}")


# Configuration ------------------------------------------------------------------------------------
DEFAULT_BASE_URLS = {
    "alphavantage": "https://www.alphavantage.co/query",
    "stooq": "https://stooq.com",
    "tiingo": "https://api.tiingo.com",
    "polygon": "https://api.polygon.io",
    "stocktwits": "https://api.stocktwits.com/api/2",
}
# Free-tier defaults; override per provider through ``limits``.
DEFAULT_LIMITS: dict[str, dict[str, Any]] = {
    "alphavantage": {"requests_per_minute": 5, "requests_per_day": 25, "cost_per_call_usd": 0.0},
    "stooq": {"requests_per_minute": 30, "requests_per_day": 1000, "cost_per_call_usd": 0.0},
    "tiingo": {"requests_per_minute": 50, "requests_per_day": 1000, "cost_per_call_usd": 0.0},
    # the free "Basic" plan: 5 requests a minute, no daily cap; a daily update needs 3 or 4
    "polygon": {"requests_per_minute": 5, "requests_per_day": None, "cost_per_call_usd": 0.0},
    # the public streams allow about 200 requests an hour per address
    "stocktwits": {"requests_per_minute": 3, "requests_per_day": None, "cost_per_call_usd": 0.0},
}


@dataclass(frozen=True)
class ProviderConfig:
    base_url: str
    api_key: str = field(default="", repr=False)
    requests_per_minute: float = 5.0
    requests_per_day: int | None = None
    cost_per_call_usd: float = 0.0
    timeout_seconds: float = 30.0
    max_retries: int = 3
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 60.0
    max_retry_after_seconds: float = 120.0
    name: str = ""

    @classmethod
    def from_env(
        cls, name: str, limits: Mapping[str, Any] | None = None, *, environ: Mapping[str, str] | None = None
    ) -> ProviderConfig:
        """``<NAME>_BASE_URL`` (default: the provider's public URL) and ``<NAME>_API_KEY`` from the
        environment; rate limits, cost and retry settings from ``limits`` (keys = field names)."""
        env = os.environ if environ is None else environ
        key = name.strip().lower()
        prefix = key.upper()
        values: dict[str, Any] = dict(DEFAULT_LIMITS.get(key, {}))
        values.update({k: v for k, v in (limits or {}).items() if k in cls.__dataclass_fields__})
        base_url = env.get(f"{prefix}_BASE_URL") or values.pop("base_url", None) or DEFAULT_BASE_URLS.get(key, "")
        values.pop("base_url", None)
        api_key = env.get(f"{prefix}_API_KEY", values.pop("api_key", ""))
        values.pop("name", None)
        if not base_url:
            raise ValueError(f"{prefix}_BASE_URL is not set and {key!r} has no default base URL")
        return cls(base_url=base_url.rstrip("/") if key != "alphavantage" else base_url, api_key=api_key or "",
                   name=key, **values)

    def secrets(self) -> tuple[str, ...]:
        return (self.api_key,) if self.api_key else ()


# Provider ------------------------------------------------------------------------------------------
class PriceProvider(abc.ABC):
    """The interface every price source implements (HTTP APIs and local file drops).

    ``fetch_daily`` returns a DataFrame with ``PRICE_COLUMNS`` (plus ``dividend_amount`` and
    ``split_coefficient`` where the source has them), ``date`` as datetime64 at midnight, sorted, only
    rows with ``date > since``. Failures raise ``ProviderError`` subclasses with a ``reason``.
    ``on_call`` receives a ``CallRecord`` for every HTTP request, retries included.
    """

    name: ClassVar[str] = "provider"
    supports_news: ClassVar[bool] = False
    supports_fundamentals: ClassVar[bool] = False
    supports_date_range: ClassVar[bool] = False

    on_call: OnCall | None = None
    budget: Budget = UNLIMITED

    @abc.abstractmethod
    def fetch_daily(self, symbol: str, *, since: date | None = None) -> pd.DataFrame:
        """New daily bars of ``symbol`` after ``since`` (all history when None)."""

    def fetch_news(self, symbol: str, since: date | None = None) -> pd.DataFrame:
        raise NotImplementedError(f"{self.name} has no news endpoint")

    def fetch_fundamentals(self, symbol: str) -> dict[str, Any]:
        raise NotImplementedError(f"{self.name} has no fundamentals endpoint")

    def redact(self, text: str) -> str:
        return str(text)


class HttpProvider(PriceProvider):
    """Base class of the HTTP providers.

    Subclasses implement ``fetch_daily`` (and optionally ``fetch_news``/``fetch_fundamentals``) with
    ``self.request``, which applies the budget, the rate limiter, retries with backoff, and meters
    every attempt.
    """

    def __init__(
        self,
        config: ProviderConfig | None = None,
        *,
        on_call: OnCall | None = None,
        budget: Budget | Callable[[], float] | float | None = None,
        limiter: RateLimiter | None = None,
        http: HttpClient | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        today: Callable[[], date] | None = None,
    ) -> None:
        self.config = config or ProviderConfig.from_env(self.name)
        self.on_call = on_call
        self.budget = as_budget(budget)
        self.limiter = limiter or get_limiter(
            self.name, self.config.requests_per_minute, self.config.requests_per_day
        )
        self.http = http or HttpClient(user_agent="investml/0.1")
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._today = today or date.today

    # -- helpers -----------------------------------------------------------------------------------
    def redact(self, text: str) -> str:
        return redact(text, self.config.secrets())

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform(0, min(max, base * 2**(attempt-1)))."""
        cap = min(self.config.backoff_max_seconds, self.config.backoff_base_seconds * (2 ** (attempt - 1)))
        return self._rng.uniform(0.0, cap)

    def _emit(self, record: CallRecord) -> None:
        self.budget.charge(record.cost_usd)
        if self.on_call is not None:
            self.on_call(record)

    def request(
        self,
        url: str,
        *,
        endpoint: str,
        symbol: str | None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        parse: Callable[[HttpResponse], Any],
    ) -> Any:
        """GET ``url`` with retries; ``parse`` turns a 2xx response into a result or raises ProviderError.

        Retried: 429, 5xx, timeouts, connection errors and ``ProviderError(retryable=True)`` raised by
        ``parse`` (Alpha Vantage's HTTP-200 rate-limit notes). Not retried: 400/401/403/404 and other
        4xx. ``Retry-After`` (seconds or HTTP date) is honoured up to ``max_retry_after_seconds``.
        """
        cfg = self.config
        attempts = max(1, int(cfg.max_retries) + 1)
        last: ProviderError | None = None
        for attempt in range(1, attempts + 1):
            try:
                self.budget.check(cfg.cost_per_call_usd)
            except BudgetExceededError as exc:
                raise exc.with_context(symbol=symbol, provider=self.name) from None
            try:
                self.limiter.acquire()
            except DailyLimitReached as exc:
                raise RateLimitedError(
                    f"{self.name} daily request limit reached ({exc.limit}/day)",
                    symbol=symbol, provider=self.name, retryable=False,
                ) from None
            started = time.monotonic()
            response: HttpResponse | None = None
            error: ProviderError | None = None
            result: Any = None
            try:
                response = self.http.get(url, params=params, headers=headers, timeout=cfg.timeout_seconds)
            except TransportError as exc:
                cls = ProviderTimeoutError if exc.kind == "timeout" else ServerError
                error = cls(f"{exc.kind} talking to {self.name}: {self.redact(exc.detail)}", symbol=symbol,
                            provider=self.name, retryable=True)
            if response is not None:
                error = self._classify_status(response, symbol)
                if error is None:
                    try:
                        result = parse(response)
                    except ProviderError as exc:
                        error = exc.with_context(symbol=symbol, provider=self.name)
                        error.status = error.status or response.status
                    except (ValueError, KeyError, TypeError) as exc:
                        error = BadResponseError(
                            f"unreadable {endpoint} reply from {self.name}: {self.redact(str(exc))[:200]}",
                            symbol=symbol, provider=self.name,
                        )
            if error is not None:  # whatever the reply echoed, the key leaves this method redacted
                error.detail = self.redact(error.detail)
                error.args = (error._message(),)
            seconds = response.seconds if response is not None else time.monotonic() - started
            record = CallRecord(
                provider=self.name,
                endpoint=endpoint,
                symbol=symbol,
                status=response.status if response is not None else 0,
                bytes=len(response.body) if response is not None else 0,
                seconds=seconds,
                cost_usd=cfg.cost_per_call_usd,
                attempt=attempt,
                error=error.reason if error is not None else None,
                url=self.redact(response.url if response is not None else url),
            )
            self._emit(record)
            if error is None:
                logger.debug("%s %s %s ok in %.3fs", self.name, endpoint, symbol, seconds)
                return result
            last = error
            if not error.retryable or attempt >= attempts:
                break
            delay = self._backoff(attempt)
            if error.retry_after is not None:
                if error.retry_after > cfg.max_retry_after_seconds:
                    break
                delay = max(delay, error.retry_after)
            logger.warning(
                "%s %s %s: %s (attempt %d/%d), retrying in %.2fs",
                self.name, endpoint, symbol, error.reason, attempt, attempts, delay,
            )
            self._sleep(delay)
        assert last is not None
        logger.warning("%s %s %s failed: %s", self.name, endpoint, symbol, self.redact(str(last)))
        raise last

    def _classify_status(self, response: HttpResponse, symbol: str | None) -> ProviderError | None:
        status = response.status
        if 200 <= status < 300:
            return None
        detail = self.redact(response.text()[:200].strip()) or f"HTTP {status}"
        kwargs = {"symbol": symbol, "provider": self.name, "status": status}
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status == 429:
            return RateLimitedError(f"HTTP 429 from {self.name}: {detail}", retry_after=retry_after, **kwargs)
        if status >= 500:
            return ServerError(f"HTTP {status} from {self.name}: {detail}", retry_after=retry_after, **kwargs)
        if status in (401, 403):
            return AuthError(f"HTTP {status} from {self.name}: API key rejected", **kwargs)
        if status == 404:
            return NotFoundError(f"unknown ticker at {self.name} (HTTP 404)", **kwargs)
        return BadResponseError(f"HTTP {status} from {self.name}: {detail}", **kwargs)


# Frames --------------------------------------------------------------------------------------------
def empty_prices(with_actions: bool = False) -> pd.DataFrame:
    cols = PRICE_COLUMNS + (ACTION_COLUMNS if with_actions else [])
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})
    frame["date"] = pd.Series(dtype="datetime64[ns]")
    return frame[cols]


def finish_prices(frame: pd.DataFrame, since: date | None, *, with_actions: bool = False) -> pd.DataFrame:
    """Canonical column order and dtypes, sorted by date, one row per date, only dates > since."""
    cols = PRICE_COLUMNS + [c for c in ACTION_COLUMNS if with_actions or c in frame]
    if frame.empty:
        return empty_prices(with_actions=any(c in frame for c in ACTION_COLUMNS) or with_actions)
    frame = frame.copy()
    dates = pd.to_datetime(frame["date"])
    if dates.dt.tz is not None:  # Tiingo "2024-01-02T00:00:00.000Z": keep the calendar day
        dates = dates.dt.tz_localize(None)
    frame["date"] = dates.dt.normalize().astype("datetime64[ns]")
    if "adj_close" not in frame:
        frame["adj_close"] = frame["close"]
    for col in cols:
        if col == "date":
            continue
        if col not in frame:
            frame[col] = 1.0 if col == "split_coefficient" else 0.0 if col == "dividend_amount" else math.nan
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    if since is not None:
        frame = frame[frame["date"] > pd.Timestamp(since)]
    frame = frame.drop_duplicates("date", keep="last").sort_values("date")
    return frame[cols].reset_index(drop=True)


# Batch update --------------------------------------------------------------------------------------
@dataclass
class UpdateResult:
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # symbol -> "reason: message"
    failed_reasons: dict[str, str] = field(default_factory=dict)  # symbol -> reason code
    skipped: list[str] = field(default_factory=list)  # not attempted (budget exhausted)
    calls: int = 0
    cost_usd: float = 0.0
    records: list[CallRecord] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(len(f) for f in self.frames.values())


def update_prices(
    provider: PriceProvider,
    symbols: Iterable[str],
    *,
    since_by_symbol: Mapping[str, date | None] | None = None,
    on_call: OnCall | None = None,
    budget: Budget | Callable[[], float] | float | None = None,
) -> UpdateResult:
    """Fetch new daily rows for each symbol; one ticker's error does not stop the others.

    ``budget_exceeded`` (from the budget given here, or the provider's own) stops the loop: that and
    every remaining ticker are put in ``failed`` with the budget message and listed in ``skipped``.
    ``on_call`` (here and/or on the provider) sees every HTTP request.
    """
    since_by_symbol = since_by_symbol or {}
    result = UpdateResult()
    symbols = list(dict.fromkeys(s.strip().upper() for s in symbols if s and s.strip()))
    saved_on_call, saved_budget = provider.on_call, provider.budget

    def meter(record: CallRecord) -> None:
        result.calls += 1
        result.cost_usd += record.cost_usd
        result.records.append(record)
        if saved_on_call is not None:
            saved_on_call(record)
        if on_call is not None:
            on_call(record)

    provider.on_call = meter
    if budget is not None:
        provider.budget = as_budget(budget)
    try:
        for index, symbol in enumerate(symbols):
            try:
                result.frames[symbol] = provider.fetch_daily(symbol, since=since_by_symbol.get(symbol))
            except BudgetExceededError as exc:
                message = str(exc)
                logger.warning("%s: %s; %d tickers skipped", provider.name, message, len(symbols) - index)
                for rest in symbols[index:]:
                    result.failed[rest] = message
                    result.failed_reasons[rest] = BUDGET_EXCEEDED
                    result.skipped.append(rest)
                break
            except ProviderError as exc:
                result.failed[symbol] = f"{exc.reason}: {provider.redact(str(exc))}"
                result.failed_reasons[symbol] = exc.reason
                logger.info("%s: %s failed (%s)", provider.name, symbol, exc.reason)
    finally:
        provider.on_call, provider.budget = saved_on_call, saved_budget
    return result
