import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from features.services.news import NewsFileError, ingest_news_file


class Command(BaseCommand):
    help = (
        "Load news headlines from a CSV or CSV.gz (columns date, ticker, headline; optional time, source, url), "
        "score each headline's sentiment and store it, skipping duplicates. Rows of tickers not in the "
        "database are skipped and counted unless --create-tickers."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--create-tickers", action="store_true", help="add unknown tickers instead of skipping")
        parser.add_argument("--limit", type=int, help="read only the first N rows")
        parser.add_argument("--json", action="store_true", dest="as_json", help="end with one JSON line")

    def handle(self, *args, path, create_tickers, limit, as_json, **options):
        try:
            summary = ingest_news_file(path=path, create_tickers=create_tickers, limit=limit,
                                       progress=self.stderr.write)
        except NewsFileError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"{summary.rows_read:,} rows read: {summary.rows_loaded:,} new, {summary.rows_unchanged:,} already "
            f"stored or duplicated, {summary.rows_rejected:,} rejected; {summary.tickers} tickers, "
            f"{summary.days} days in {summary.seconds:.1f}s"
        )
        for reason, count in sorted(summary.rejected_by_reason.items()):
            self.stdout.write(f"  rejected {count:,} rows: {reason}")
        if summary.unknown_tickers:
            self.stdout.write(
                f"  {summary.unknown_tickers:,} unknown tickers skipped (e.g. {', '.join(summary.unknown_ticker_sample)});"
                " pass --create-tickers to add them"
            )
        if as_json:
            self.stdout.write(json.dumps(summary.as_dict(), sort_keys=True))
