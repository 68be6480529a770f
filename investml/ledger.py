"""The cost ledger and the alerts every app writes, at the bottom of the dependency direction.

features meters its data-provider requests and checks the daily and monthly budgets through it,
training its compute seconds and the pipeline's cost limit (with an alert when a run is skipped for
it). The tables (``monitoring.models.CostRecord`` and ``Alert``) and their queries belong to
monitoring, the top app (features < registry < training < inference < monitoring): monitoring
installs its implementation in ``MonitoringConfig.ready()``, so the apps below call these functions
and never import monitoring. Until one is installed every call raises ``LedgerNotInstalled``: a
request that was paid for is never silently left unrecorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any


class LedgerNotInstalled(RuntimeError):
    pass


@dataclass(frozen=True)
class CostBreach:
    """A cost limit passed: ``period`` "daily" (key: the day) or "monthly" (key: the month)."""

    period: str
    key: str
    spent_usd: float
    limit_usd: float
    message: str


@dataclass(frozen=True)
class Ledger:
    """The implementation: each field has the signature of the function of the same name below."""

    record_cost: Callable[..., Any]
    record_api_calls: Callable[..., int]
    cost_for_day: Callable[..., Decimal]
    costs_by_category: Callable[..., dict[str, Decimal]]
    api_calls_for_day: Callable[..., int]
    cost_for_month: Callable[..., Decimal]
    monthly_cost_limit: Callable[[], float]
    cost_limit_breach: Callable[..., CostBreach | None]
    raise_alert: Callable[..., Any]


_installed: Ledger | None = None


def install(ledger: Ledger) -> None:
    global _installed
    _installed = ledger


def _ledger() -> Ledger:
    if _installed is None:
        raise LedgerNotInstalled("no cost ledger is installed: the 'monitoring' app must be in INSTALLED_APPS")
    return _installed


# writes


def record_cost(*, day: date, category: str, source: str, detail: str = "", units: float = 0.0, unit: str = "call",
                bytes: int = 0, cost_usd: float | Decimal = 0) -> Any:  # noqa: A002 - the record's field name
    """One cost record (``category``: compute, data_api or storage)."""
    return _ledger().record_cost(day=day, category=category, source=source, detail=detail, units=units, unit=unit,
                                 bytes=bytes, cost_usd=cost_usd)


def record_api_calls(*, records: Iterable[Any], day: date | None = None) -> int:
    """One ``data_api`` cost record per HTTP request (``features.providers.base.CallRecord``);
    returns how many were written."""
    records = list(records)
    if not records:
        return 0
    return _ledger().record_api_calls(records=records, day=day)


def raise_alert(*, kind: str, key: str, severity: str, message: str, details: dict[str, Any] | None = None) -> Any:
    """Open the alert ``(kind, key)``, or count a repeat of the open one (see ``monitoring.services``)."""
    return _ledger().raise_alert(kind=kind, key=key, severity=severity, message=message, details=details or {})


# reads


def cost_for_day(*, day: date) -> Decimal:
    """Total tracked cost of ``day`` in USD, all categories (what the daily limit is checked against)."""
    return _ledger().cost_for_day(day=day)


def costs_by_category(*, day: date) -> dict[str, Decimal]:
    """``{category: total USD}`` of ``day``; every category present."""
    return _ledger().costs_by_category(day=day)


def api_calls_for_day(*, day: date, source: str) -> int:
    """How many requests were made to data provider ``source`` on ``day``."""
    return _ledger().api_calls_for_day(day=day, source=source)


def cost_for_month(*, day: date) -> Decimal:
    """Month-to-date: the tracked cost of ``day``'s month through ``day``."""
    return _ledger().cost_for_month(day=day)


def monthly_cost_limit() -> float:
    """``ML_MONTHLY_COST_LIMIT_USD``."""
    return _ledger().monthly_cost_limit()


def cost_limit_breach(*, day: date | None = None, daily_limit: float | None = None) -> CostBreach | None:
    """The limit that stops paid work now, if any: the day's cost over the daily limit (checked
    first), else the month-to-date over the monthly one."""
    return _ledger().cost_limit_breach(day=day, daily_limit=daily_limit)
