"""The NYSE trading calendar: full-day closures, trading days, the last day whose bar is final.
Framework-free (no Django)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from functools import lru_cache
from zoneinfo import ZoneInfo

__all__ = ["DATA_READY", "MARKET_TZ", "is_trading_day", "last_completed_trading_day", "trading_holidays"]

MARKET_TZ = ZoneInfo("America/New_York")
DATA_READY = dtime(18, 0)  # New York time from which a trading day's bar counts as final


@lru_cache(maxsize=128)
def _holidays_of(year: int) -> frozenset[date]:
    try:  # ``holidays`` comes with prophet (requirements/base.txt); weekends only without it
        import holidays as holidays_lib  # local: optional, ~0.1 s to import, needed only here

        return frozenset(holidays_lib.financial_holidays("NYSE", years=year).keys())
    except Exception:  # pragma: no cover - package missing or without the NYSE calendar
        return frozenset()


def trading_holidays(*, years: Iterable[int]) -> list[date]:
    """NYSE full-day closures of ``years`` (holidays and special closings)."""
    return sorted(d for year in set(years) for d in _holidays_of(year))


def is_trading_day(day: date) -> bool:
    return day.weekday() < 5 and day not in _holidays_of(day.year)


def last_completed_trading_day(*, now: datetime | None = None) -> date:
    """The newest NYSE trading day whose bar is final at ``now`` (default: the current time; from
    18:00 New York time).

    A naive ``now`` is read as New York time.
    """
    now = now or datetime.now(UTC)
    local = now.astimezone(MARKET_TZ) if now.tzinfo is not None else now.replace(tzinfo=MARKET_TZ)
    day = local.date()
    if is_trading_day(day) and local.time() >= DATA_READY:
        return day
    day -= timedelta(days=1)
    while not is_trading_day(day):
        day -= timedelta(days=1)
    return day
