"""Reads of the monitoring tables: cost totals."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from django.db.models import Sum

from monitoring.models import CostRecord

ZERO = Decimal("0")


def cost_for_day(*, day: date) -> Decimal:
    """Total tracked cost of ``day`` in USD, all categories (what the daily limit is checked against)."""
    total = CostRecord.objects.filter(day=day).aggregate(total=Sum("cost_usd"))["total"]
    return total if total is not None else ZERO


def costs_by_category(*, day: date) -> dict[str, Decimal]:
    """``{category: total USD}`` of ``day``; every category is present (0 when nothing was recorded)."""
    totals = {category: ZERO for category in CostRecord.Category.values}
    for row in CostRecord.objects.filter(day=day).values("category").annotate(total=Sum("cost_usd")):
        totals[row["category"]] = row["total"] or ZERO
    return totals


def api_calls_for_day(*, day: date, source: str) -> int:
    """How many requests were made to data provider ``source`` on ``day`` (its ``data_api`` call records)."""
    total = (
        CostRecord.objects.filter(day=day, category=CostRecord.Category.DATA_API, source=source, unit="call")
        .aggregate(total=Sum("units"))["total"]
    )
    return int(total or 0)
