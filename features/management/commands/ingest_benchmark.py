import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from features.services.benchmark_returns import MARKET_SYMBOL, ingest_benchmark_returns
from features.services.store_errors import FeatureStoreError


class Command(BaseCommand):
    help = (
        "Load daily benchmark returns (a `date,return` CSV, e.g. SPY) used as the market by the feature "
        "store. Idempotent: re-running changes nothing, a corrected return updates."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--symbol", default=MARKET_SYMBOL)
        parser.add_argument("--json", action="store_true", dest="as_json")

    def handle(self, *args, path, symbol, as_json, **options):
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        try:
            summary = ingest_benchmark_returns(path=path, symbol=symbol, progress=self.stderr.write)
        except FeatureStoreError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"{summary.symbol}: {summary.rows_read:,} rows read, {summary.rows_loaded:,} loaded, "
            f"{summary.rows_updated:,} updated, {summary.rows_unchanged:,} unchanged, "
            f"{summary.rows_rejected:,} rejected ({summary.first_date}..{summary.last_date})"
        )
        if as_json:
            self.stdout.write(json.dumps(summary.as_dict(), sort_keys=True))
