import json

from django.core.management.base import BaseCommand, CommandError

from features.services.data_refresh import refresh_fundamentals


class Command(BaseCommand):
    help = (
        "Refresh fundamentals from ML_FUNDAMENTALS_PROVIDER (alphavantage: OVERVIEW) as the daily beat task does: "
        "the day's share of a cycle of ML_FUNDAMENTALS_REFRESH_DAYS (7) days, within the provider's remaining "
        "daily quota, stored point in time (as of today, New York)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--provider", help="default ML_FUNDAMENTALS_PROVIDER")
        parser.add_argument("--tickers", help="comma-separated tickers (default: the active tickers)")
        parser.add_argument("--json", action="store_true", dest="as_json", help="end with one JSON line")

    def handle(self, *args, provider=None, tickers=None, as_json=False, **options):
        symbols = [t for t in tickers.split(",") if t.strip()] if tickers else None
        try:
            summary = refresh_fundamentals(provider=provider, tickers=symbols, progress=self.stderr.write)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if summary.skipped:
            self.stdout.write(f"nothing done: {summary.skipped}")
        else:
            self.stdout.write(
                f"{summary.provider}: {len(summary.refreshed)} of {summary.universe} tickers refreshed as of "
                f"{summary.as_of} ({summary.due} due, {summary.never_refreshed} never refreshed, "
                f"{summary.deferred} deferred); {summary.calls} calls, ${summary.cost_usd:.4f}")
            for ticker, message in list(sorted(summary.failed.items()))[:20]:
                self.stdout.write(f"    {ticker}: {message}")
            if summary.warning:
                self.stderr.write(f"WARNING: {summary.warning}")
        if as_json:
            self.stdout.write(json.dumps(summary.as_dict(), sort_keys=True))
