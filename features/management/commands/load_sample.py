from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from features.services.benchmark_returns import ingest_benchmark_returns
from features.services.store_errors import FeatureStoreError


class Command(BaseCommand):
    help = (
        "Ingest the bundled sample (prices, fundamentals and SPY benchmark returns under ML_DATA_PATH, "
        "default ./sample_data)."
    )

    def handle(self, *args, **options):
        root = settings.ML_DATA_PATH
        prices, fundamentals = root / "prices", root / "fundamentals"
        benchmark = root / "benchmarks" / "SPY_returns.csv"
        if not prices.is_dir():
            raise CommandError(f"no sample prices at {prices} (set ML_DATA_PATH)")
        call_command("ingest_prices", str(prices), stdout=self.stdout, stderr=self.stderr)
        if fundamentals.is_dir():
            call_command("ingest_fundamentals", str(fundamentals), stdout=self.stdout, stderr=self.stderr)
        if benchmark.is_file():
            try:
                summary = ingest_benchmark_returns(path=benchmark, symbol="SPY", progress=self.stderr.write)
            except FeatureStoreError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(
                f"SPY benchmark: {summary.rows_loaded:,} loaded, {summary.rows_updated:,} updated, "
                f"{summary.rows_unchanged:,} unchanged ({summary.first_date}..{summary.last_date})"
            )
