import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from features.services.social import SocialFileError, ingest_social_file


class Command(BaseCommand):
    help = (
        "Load social-media posts from a CSV, CSV.gz or JSON-lines file (a time, the text, and the tickers "
        "as a ticker column or $CASHTAGS in the text; optional source, author id, post id and the author's "
        "Bullish/Bearish tag; StockTwits API messages work as they are), score each post and store it once "
        "per post and ticker. Malformed rows are rejected with their reason; posts about tickers not in the "
        "database are rejected as unknown_ticker."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--source", help="source of rows without a source column (default: 'file'; "
                            "StockTwits messages: 'stocktwits')")
        parser.add_argument("--limit", type=int, help="read only the first N rows")
        parser.add_argument("--json", action="store_true", dest="as_json", help="end with one JSON line")

    def handle(self, *args, path, source, limit, as_json, **options):
        if limit is not None and limit < 1:
            raise CommandError("--limit must be at least 1")
        try:
            summary = ingest_social_file(path=path, source=source, limit=limit, progress=self.stderr.write)
        except SocialFileError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"{summary.rows_read:,} rows read: {summary.rows_loaded:,} loaded ({summary.posts_loaded:,} new posts "
            f"by ticker), {summary.rows_unchanged:,} already stored or duplicated, {summary.rows_rejected:,} "
            f"rejected; {summary.tickers} tickers, {summary.days} days in {summary.seconds:.1f}s"
        )
        for reason, count in sorted(summary.rejected_by_reason.items()):
            self.stdout.write(f"  rejected {count:,} rows: {reason}")
        if summary.unknown_tickers:
            self.stdout.write(f"  {summary.unknown_tickers:,} unknown tickers (e.g. "
                              f"{', '.join(summary.unknown_ticker_sample)}): ingest their prices first")
        if as_json:
            self.stdout.write(json.dumps(summary.as_dict(), sort_keys=True))
