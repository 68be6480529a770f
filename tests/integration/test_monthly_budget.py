"""The monthly budget (issue 16, item 4) on the real test database: month-to-date and the projected
month-end cost on the dashboard and in ``monitor_status``; one projection alert per month; and the
same stop as the daily limit once the month-to-date passes ``ML_MONTHLY_COST_LIMIT_USD``, for
provider updates (over real HTTP against the fake provider server) and for pipeline runs."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from features.models import PriceBar
from features.providers import reset_limiters
from features.services.market_updates import update_market_data
from monitoring import budget, selectors, services
from monitoring.models import Alert, CostRecord
from monitoring.services import record_cost
from tests.fakes.provider_server import FakeProviderServer, make_bars
from training.orchestrator import dispatch
from training.orchestrator.triggers import request_pipeline_run

pytestmark = pytest.mark.django_db

KEY = "TESTKEY-123456"
SATURDAY = datetime(2024, 6, 29, 12, 0, tzinfo=ZoneInfo("America/New_York"))


@pytest.fixture(autouse=True)
def limits(settings, monkeypatch):
    caches = {name: dict(conf) for name, conf in settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = f"test-month-{uuid.uuid4().hex[:10]}"
    settings.CACHES = caches
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.ML_DAILY_COST_LIMIT_USD = 100.0  # out of the way: these tests are about the monthly limit
    settings.ML_MONTHLY_COST_LIMIT_USD = 50.0
    monkeypatch.setattr(selectors, "system_utilization", lambda: (0.2, 0.4))
    settings.ML_MARKET_DATA_PROVIDER = ""
    reset_limiters()
    yield settings
    reset_limiters()


def spend(day: date, usd: float, category: str = "compute") -> None:
    record_cost(day=day, category=category, source="test", units=1, unit="cpu_second", cost_usd=usd)


def test_month_to_date_and_projection_from_the_cost_records():
    today = timezone.localdate()
    for back in range(1, 8):  # the last 7 complete days: $3/day (some in the previous month, when early)
        spend(today - timedelta(days=back), 3.0)
    spend(today - timedelta(days=40), 99.0)  # long before: neither month-to-date nor the rate
    spend(today, 1.0)
    projection = selectors.month_projection(day=today)
    before_today = sum(3.0 for back in range(1, 8) if (today - timedelta(days=back)).month == today.month)
    assert projection.month_to_date_usd == pytest.approx(before_today + 1.0)
    assert float(selectors.cost_for_month(day=today)) == pytest.approx(before_today + 1.0)
    assert projection.daily_rate_usd == pytest.approx(3.0) and projection.rate_days == 7
    days_left = budget.days_in_month(today) - today.day
    assert projection.projected_usd == pytest.approx(before_today + 3.0 + 3.0 * days_left)
    assert projection.limit_usd == 50.0 and projection.month == budget.month_key(today)


def test_the_projection_alert_opens_once_per_month_and_the_month_to_date_alert_replaces_it():
    now = datetime(2025, 8, 10, 12, 0, tzinfo=UTC)  # a fixed day, so the month has days left
    today = now.date()
    for back in range(1, 8):
        spend(today - timedelta(days=back), 4.0)  # $4/day: over $50 by month end
    spend(today, 0.5)
    projection = selectors.month_projection(day=today)
    assert projection.over_limit and not projection.month_to_date_over_limit
    assert projection.projected_usd == pytest.approx(7 * 4.0 + 4.0 + 21 * 4.0)  # 3..9 Aug, today at the rate, 21 left
    month = "2025-08"

    services.evaluate_alerts(now=now)
    services.evaluate_alerts(now=now + timedelta(minutes=1))
    (alert,) = Alert.objects.filter(kind="cost_projection", resolved=False)
    assert alert.key == month and alert.count == 2 and alert.severity == "warning"
    assert alert.message.startswith(f"Projected month-end cost ${projection.projected_usd:.2f} > monthly limit $50.00")
    assert alert.details["method"] == projection.method

    spend(today, 60.0)  # the month-to-date itself passes the limit
    services.evaluate_alerts(now=now + timedelta(minutes=2))
    (exceeded,) = Alert.objects.filter(kind="cost_limit_exceeded", resolved=False)
    mtd = float(selectors.cost_for_month(day=today))
    assert exceeded.key == month and exceeded.message == f"Monthly cost limit exceeded: ${mtd:.2f} > $50.00"
    assert not Alert.objects.filter(kind="cost_projection", resolved=False).exists()  # resolved: superseded


def test_no_monthly_alert_under_the_limit(settings):
    settings.ML_MONTHLY_COST_LIMIT_USD = 1000.0
    spend(timezone.localdate(), 5.0)
    assert services.evaluate_alerts().errors == {}
    assert not Alert.objects.filter(kind__in=["cost_projection", "cost_limit_exceeded"]).exists()


def test_dashboard_costs_and_monitor_status_show_the_month(settings):
    from django.contrib.auth import get_user_model

    today = timezone.localdate()
    spend(today, 12.34)
    projection = selectors.month_projection(day=today)
    client = Client()
    client.force_login(get_user_model().objects.create_user("month-viewer"))
    page = client.get("/dashboard/costs/").content.decode()
    assert "ML_MONTHLY_COST_LIMIT_USD" in page and "Projected month-end" in page
    assert f"${projection.month_to_date_usd:.2f}" in page and f"${projection.projected_usd:.2f}" in page
    assert "limit $50.00" in page and "Projection: month to date / elapsed days" in page

    out = io.StringIO()
    call_command("monitor_status", stdout=out, no_color=True)
    text = out.getvalue()
    assert "Costs this month" in text
    assert f"month to date ${projection.month_to_date_usd:.2f} of $50.00 monthly limit" in text
    assert f"projected month-end ${projection.projected_usd:.2f}" in text and "method: " in text

    spend(today, 40.0)  # over: both say so
    text = io.StringIO()
    call_command("monitor_status", stdout=text, no_color=True)
    assert "monthly limit (EXCEEDED)" in text.getvalue() and "(OVER THE LIMIT)" in text.getvalue()


def test_provider_updates_stop_at_the_monthly_limit_with_its_message(settings, monkeypatch):
    server = FakeProviderServer(api_keys=(KEY,))
    try:
        symbols = [f"M{i}" for i in range(6)]
        for i, symbol in enumerate(symbols):
            server.add_symbol(symbol, make_bars(symbol, end=date(2024, 6, 28), days=30, seed=i))
        settings.PIPELINE_CONFIG = settings.PIPELINE_CONFIG.with_overrides({"providers": {"alphavantage": {
            "requests_per_minute": 60_000, "requests_per_day": 0, "cost_per_call_usd": 0.01, "timeout_seconds": 5,
            "max_retries": 3}}})
        monkeypatch.setenv("ALPHAVANTAGE_BASE_URL", server.alphavantage_url)
        monkeypatch.setenv("ALPHAVANTAGE_API_KEY", KEY)
        spend(timezone.localdate(), 49.97)  # month-to-date; the daily limit ($100) is far

        summary = update_market_data(provider="alphavantage", tickers=symbols, now=SATURDAY)

        message = "Monthly cost limit exceeded: $50.01 > $50.00"
        assert summary.warning == message and summary.budget_exceeded
        assert summary.calls == 3 and len(server.requests) == 3
        assert summary.skipped == ["M3", "M4", "M5"] and PriceBar.objects.values("ticker").distinct().count() == 3
        assert CostRecord.objects.filter(category="data_api").count() == 3
        assert float(selectors.cost_for_month(day=timezone.localdate())) == pytest.approx(50.0)
        again = update_market_data(provider="alphavantage", tickers=symbols, now=SATURDAY)
        assert again.calls == 0 and again.warning == message and len(server.requests) == 3
    finally:
        server.close()


def test_pipeline_runs_are_skipped_past_the_monthly_limit(settings, monkeypatch):
    settings.PIPELINE_CONFIG = settings.PIPELINE_CONFIG.with_overrides({"orchestrator": {"enable_scheduling": True}})
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(dispatch, "start_chain",
                        lambda *, run_id, generation: sent.append((run_id, generation)) or f"task-{run_id}")
    spend(timezone.localdate(), 51.2)

    run = request_pipeline_run(trigger="schedule", requested_by="celery beat")

    assert run.status == "skipped" and run.status_reason == "Monthly cost limit exceeded: $51.20 > $50.00"
    assert sent == []
    alert = Alert.objects.get(kind="cost_limit_exceeded", resolved=False)
    assert alert.key == budget.month_key(timezone.localdate()) and alert.message == run.status_reason
    assert alert.details["skipped_pipeline_run"] == run.pk and alert.details["limit_usd"] == 50.0

    settings.ML_DAILY_COST_LIMIT_USD = 10.0  # both passed: the daily limit is named first
    second = request_pipeline_run(trigger="schedule", requested_by="celery beat")
    assert second.status_reason == "Daily cost limit exceeded: $51.20 > $10.00"
