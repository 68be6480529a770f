"""Writes to the monitoring tables: cost records.

Every metered cost is one ``CostRecord`` row: an HTTP request to a data provider (category
``data_api``, one row per request, retries included), compute seconds of a run, storage. The daily
budget (``ML_DAILY_COST_LIMIT_USD``) is checked against their total for the day
(``monitoring.selectors.cost_for_day``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING

from django.utils import timezone

from monitoring.models import CostRecord

if TYPE_CHECKING:
    from features.providers.base import CallRecord

BATCH_SIZE = 1_000
_COST_QUANTUM = Decimal("0.000001")  # CostRecord.cost_usd has 6 decimal places


def _usd(value: float | Decimal | str | int) -> Decimal:
    # Through str() so 0.01 stays 0.01 instead of 0.01000000000000000020816681711721685...
    return Decimal(str(value)).quantize(_COST_QUANTUM)


def record_cost(
    *,
    day: date,
    category: str,
    source: str,
    detail: str = "",
    units: float = 0.0,
    unit: str = "call",
    bytes: int = 0,  # noqa: A002 - the model's field name
    cost_usd: float | Decimal = 0,
) -> CostRecord:
    """Write one cost record."""
    if category not in CostRecord.Category.values:
        raise ValueError(f"unknown cost category {category!r} (known: {', '.join(CostRecord.Category.values)})")
    return CostRecord.objects.create(
        day=day, category=category, source=source[:100], detail=detail[:200], units=float(units), unit=unit[:20],
        bytes=max(0, int(bytes)), cost_usd=_usd(cost_usd),
    )


def record_api_calls(*, records: Iterable[CallRecord], day: date | None = None) -> int:
    """One ``data_api`` cost record per HTTP request (source = provider, detail = endpoint, 1 call).

    Written in batches; returns how many rows were written. ``day`` defaults to today (the
    ``TIME_ZONE`` date, UTC), the day the budget check totals. URLs and API keys are not stored.
    """
    day = day or timezone.localdate()
    rows = [
        CostRecord(
            day=day,
            category=CostRecord.Category.DATA_API,
            source=record.provider[:100],
            detail=record.endpoint[:200],
            units=1.0,
            unit="call",
            bytes=max(0, int(record.bytes)),
            cost_usd=_usd(record.cost_usd),
        )
        for record in records
    ]
    if rows:
        CostRecord.objects.bulk_create(rows, batch_size=BATCH_SIZE)
    return len(rows)
