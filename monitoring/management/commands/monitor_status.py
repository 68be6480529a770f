"""``manage.py monitor_status``: health, open alerts, today's and the month's costs, drift, performance and runs."""

from __future__ import annotations

from django.core.cache import cache
from django.core.management.base import BaseCommand
from django.db import connection
from django.utils import timezone

from monitoring import config, selectors


class Command(BaseCommand):
    help = ("One terminal summary: health, open alerts, today's costs against the daily limit, the month's "
            "against the monthly one (with the projected month-end cost), drift per model, runs.")

    def add_arguments(self, parser):
        parser.add_argument("--alerts", type=int, default=10, help="Open alerts listed (default 10)")
        parser.add_argument("--runs", type=int, default=5, help="Training runs listed (default 5)")

    def _h(self, text: str) -> None:
        self.stdout.write("")
        self.stdout.write(self.style.MIGRATE_HEADING(text))

    def _sev(self, severity: str, text: str) -> str:
        return {"critical": self.style.ERROR, "warning": self.style.WARNING}.get(severity, self.style.SUCCESS)(text)

    def handle(self, *args, **options):
        now = timezone.now()
        cfg = config.load()
        self.stdout.write(self.style.MIGRATE_HEADING(f"InvestML monitor status at {now:%Y-%m-%d %H:%M:%S %Z}"))

        self._h("Health")
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            database = self.style.SUCCESS("ok")
        except Exception as exc:  # noqa: BLE001 - the summary reports, it must not crash
            database = self.style.ERROR(f"error: {exc.__class__.__name__}")
        try:
            cache.set("monitoring:status-probe", 1, 10)
            cache_state = self.style.SUCCESS("ok") if cache.get("monitoring:status-probe") == 1 else "no read-back"
        except Exception as exc:  # noqa: BLE001
            cache_state = self.style.ERROR(f"error: {exc.__class__.__name__}")
        cpu, memory = selectors.system_utilization()
        limit = cfg.thresholds.resource_usage
        self.stdout.write(f"  database   {database}")
        self.stdout.write(f"  cache      {cache_state}")
        for name, value in (("cpu", cpu), ("memory", memory)):
            text = "n/a" if value is None else f"{value:.0%}"
            self.stdout.write(f"  {name:<10} {self.style.ERROR(text) if value and value > limit else text}")
        failures = selectors.model_load_failures()
        for model, info in sorted(failures.items()):
            self.stdout.write(self.style.ERROR(f"  model {model} failed to load: {info.get('error')}"))
        window = selectors.request_window(minutes=cfg.metrics_window_minutes)
        for endpoint, win in sorted(window.items()):
            self.stdout.write(f"  {endpoint:<40} {win.requests:>6} req  avg {win.avg_ms:7.1f} ms  "
                              f"errors {win.error_rate:.1%} (last {cfg.metrics_window_minutes} min)")

        self._h("Open alerts")
        counts = selectors.open_alert_counts()
        total = sum(counts.values())
        self.stdout.write(f"  {total} open: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
        for alert in selectors.open_alerts()[: options["alerts"]]:
            ack = " (ack)" if alert.acknowledged else ""
            self.stdout.write("  " + self._sev(alert.severity, f"[{alert.severity:<8}]") +
                              f" {alert.kind} {alert.key}: {alert.message} x{alert.count}{ack}")

        self._h("Costs today")
        today = timezone.localdate()
        spent = float(selectors.cost_for_day(day=today))
        cost_limit = selectors.daily_cost_limit()
        line = f"  ${spent:.2f} of ${cost_limit:.2f} limit"
        self.stdout.write(self.style.ERROR(line + " (EXCEEDED)") if spent > cost_limit else line)
        for category, usd in selectors.costs_by_category(day=today).items():
            self.stdout.write(f"    {category:<10} ${float(usd):.4f}")

        self._h("Costs this month")
        month = selectors.month_projection(day=today)
        line = f"  month to date ${month.month_to_date_usd:.2f} of ${month.limit_usd:.2f} monthly limit"
        self.stdout.write(self.style.ERROR(line + " (EXCEEDED)") if month.month_to_date_over_limit else line)
        line = f"  projected month-end ${month.projected_usd:.2f}"
        self.stdout.write(self.style.WARNING(line + " (OVER THE LIMIT)") if month.over_limit else line)
        self.stdout.write(f"    method: {month.method}")

        self._h("Models: performance and drift")
        versions = selectors.active_versions()
        if not versions:
            self.stdout.write("  no active model version")
        for version in versions:
            perf = selectors.latest_performance(version=version)
            drift = selectors.latest_drift_report(version=version)
            label = f"{version.model.name}@{version.version}"
            perf_text = (f"acc {perf.accuracy:.3f} rank_ic {perf.rank_ic if perf.rank_ic is not None else float('nan'):+.3f}"
                         f" ({perf.samples} preds, {perf.day})" if perf and perf.accuracy is not None else "no realized predictions yet")
            if drift is None:
                drift_text = "no drift report"
            else:
                drift_text = (f"{'DRIFT' if drift.drift_detected else 'stable'} {drift.drift_share:.0%} "
                              f"({drift.window_start}..{drift.window_end})")
                if drift.drift_detected:
                    drift_text = self.style.ERROR(drift_text)
            self.stdout.write(f"  {label:<32} {perf_text}; {drift_text}")

        self._h("Training runs")
        runs = selectors.recent_training_runs(limit=options["runs"])
        if not runs:
            self.stdout.write("  no training runs yet")
        for run in runs:
            duration = f"{run.duration_seconds:.0f}s" if run.duration_seconds is not None else "-"
            text = (f"  #{run.pk:<5} {run.status:<10} {run.trigger:<10} {', '.join(run.model_names)[:40]:<40} "
                    f"{duration:>7} {run.created_at:%Y-%m-%d %H:%M}")
            self.stdout.write(self.style.ERROR(text) if run.status == "failed" else text)
            if run.status == "failed" and run.error:
                self.stdout.write(f"         {run.error.strip().splitlines()[-1][:120]}")
