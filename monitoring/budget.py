"""The monthly cost budget: month-to-date, the projected month-end cost and the stop messages.

Framework-free: dates and numbers in, numbers and messages out (``monitoring.selectors`` reads the
cost records, ``monitoring.alert_rules`` turns the numbers into alerts).

Projection (``project_month_end``): the month-to-date cost, plus the rest of today and every day
left in the month at the recent daily rate, the average cost of the last ``RATE_DAYS`` (7) complete
days before today (days of the previous month included, so the first days of a month are not
extrapolated from a few hours). Today counts at least at that rate: a day that has only begun has
not spent its share yet, a day that already spent more keeps what it spent. Without any complete
day of history (a new installation) the rate is the month-to-date per elapsed day (today included),
the plain linear projection ``month_to_date / elapsed_days * days_in_month``.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

RATE_DAYS = 7


def days_in_month(day: date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


def month_start(day: date) -> date:
    return day.replace(day=1)


def month_key(day: date) -> str:
    """``"2025-08"``: the key of a month's alerts."""
    return f"{day.year:04d}-{day.month:02d}"


def rate_window(day: date, *, first_recorded: date | None, days: int = RATE_DAYS) -> tuple[date, date] | None:
    """The complete days whose average is the daily rate: up to ``days`` days before ``day``, none
    before the first day anything was recorded. None when there is no such day."""
    end = day - timedelta(days=1)
    start = day - timedelta(days=days)
    if first_recorded is not None:
        start = max(start, first_recorded)
    if first_recorded is None or start > end:
        return None
    return start, end


def projection_message(projection: MonthProjection) -> str:
    return (f"Projected month-end cost ${projection.projected_usd:.2f} > monthly limit "
            f"${projection.limit_usd:.2f} ({projection.month}: ${projection.month_to_date_usd:.2f} so far, "
            f"${projection.daily_rate_usd:.2f}/day)")


@dataclass(frozen=True)
class MonthProjection:
    month: str  # "2025-08"
    day: date
    month_to_date_usd: float  # the month's recorded cost through ``day`` (today so far included)
    today_usd: float
    daily_rate_usd: float
    rate_days: int  # complete days averaged (0: linear on the elapsed days)
    days_left: int  # days of the month after ``day``
    projected_usd: float
    limit_usd: float

    @property
    def method(self) -> str:
        if self.rate_days:
            return (f"month to date + ${self.daily_rate_usd:.2f}/day (average of the last {self.rate_days} "
                    f"complete day{'s' if self.rate_days != 1 else ''}) for today and the {self.days_left} "
                    f"day{'s' if self.days_left != 1 else ''} left")
        return "month to date / elapsed days x days in the month (no complete day recorded yet)"

    @property
    def over_limit(self) -> bool:
        return round(self.projected_usd, 9) > round(self.limit_usd, 9)

    @property
    def month_to_date_over_limit(self) -> bool:
        return round(self.month_to_date_usd, 9) > round(self.limit_usd, 9)

    def to_dict(self) -> dict[str, object]:
        return {"month": self.month, "day": self.day.isoformat(), "month_to_date_usd": self.month_to_date_usd,
                "today_usd": self.today_usd, "daily_rate_usd": self.daily_rate_usd, "rate_days": self.rate_days,
                "days_left": self.days_left, "projected_usd": self.projected_usd, "limit_usd": self.limit_usd,
                "method": self.method}


def project_month_end(*, day: date, month_to_date_usd: float, today_usd: float,
                      recent_daily_usd: Sequence[float], limit_usd: float) -> MonthProjection:
    """The month-end cost projected on ``day`` (see the module docstring).

    ``month_to_date_usd``: the month's cost through ``day``, ``today_usd`` included;
    ``recent_daily_usd``: the cost of each complete day of the rate window (``rate_window``), in any
    order, days without records as 0.
    """
    month_to_date_usd, today_usd = float(month_to_date_usd), float(today_usd)
    if month_to_date_usd < 0 or today_usd < 0:
        raise ValueError("costs cannot be negative")
    days_left = days_in_month(day) - day.day
    if recent_daily_usd:
        rate = float(sum(recent_daily_usd)) / len(recent_daily_usd)
        before_today = month_to_date_usd - today_usd
        projected = before_today + max(today_usd, rate) + rate * days_left
        rate_days = len(recent_daily_usd)
    else:
        rate = month_to_date_usd / day.day
        projected = rate * days_in_month(day)
        rate_days = 0
    return MonthProjection(
        month=month_key(day), day=day, month_to_date_usd=month_to_date_usd, today_usd=today_usd,
        daily_rate_usd=rate, rate_days=rate_days, days_left=days_left, projected_usd=projected,
        limit_usd=float(limit_usd),
    )
