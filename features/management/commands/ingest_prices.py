import json as jsonlib
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from features.pricefiles import PriceFileError
from features.services.ingestion import ingest_price_files


class Command(BaseCommand):
    help = (
        "Load daily price bars from CSV, CSV.gz or Parquet files (long format with a ticker column, "
        "or one file per ticker). Bad rows are rejected with their reason; good rows still load."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", type=Path)
        parser.add_argument("--ticker", help="Ticker for one-ticker files whose name does not say it")
        parser.add_argument("--json", action="store_true", help="End with one JSON line of counts")

    def handle(self, *args, paths, ticker, **options):
        files = []
        for path in paths:
            if path.is_dir():
                files.extend(sorted(p for p in path.iterdir() if p.name.lower().endswith((".csv", ".csv.gz", ".parquet"))))
            elif path.is_file():
                files.append(path)
            else:
                raise CommandError(f"{path}: no such file or folder")
        if not files:
            raise CommandError("no price files found in the given paths")
        try:
            summary = ingest_price_files(paths=files, ticker=ticker, progress=self.stderr.write)
        except PriceFileError as exc:
            raise CommandError(str(exc)) from exc
        result = summary.as_dict()
        self.stdout.write(
            f"{result['rows_read']:,} rows read from {result['files']} file(s): {result['rows_loaded']:,} loaded, "
            f"{result['rows_updated']:,} updated, {result['rows_unchanged']:,} unchanged, "
            f"{result['rows_rejected']:,} rejected; {result['tickers']} tickers in {result['seconds']:.1f}s"
        )
        for reason, count in result["rejected_by_reason"].items():
            self.stdout.write(f"  rejected {count:,} rows: {reason}")
        if options["json"]:
            self.stdout.write(_json_line(result))


def _json_line(result: dict) -> str:
    return jsonlib.dumps(result, sort_keys=True)
