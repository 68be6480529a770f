import json
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from features.fundamentals import FundamentalsFileError
from features.services.ingestion import IngestSummary, ingest_fundamentals_snapshot


class Command(BaseCommand):
    help = (
        "Load point-in-time fundamentals snapshots (a CSV file or a folder of them). Each file's "
        "date, from its name, is when its values became known."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", type=Path)
        parser.add_argument("--json", action="store_true", dest="as_json")

    def handle(self, *args, paths, as_json=False, **options):
        files = []
        for path in paths:
            if path.is_dir():
                files.extend(sorted(path.glob("*.csv")))
            elif path.is_file():
                files.append(path)
            else:
                raise CommandError(f"{path}: no such file or folder")
        started = time.perf_counter()
        total = IngestSummary()
        for path in files:
            try:
                one = ingest_fundamentals_snapshot(path=path, progress=self.stderr.write)
            except FundamentalsFileError as exc:
                raise CommandError(str(exc)) from exc
            total.add(one)
        total.seconds = time.perf_counter() - started
        result = total.as_dict()
        result["snapshots"] = len(files)
        self.stdout.write(
            f"{len(files)} snapshot(s): {result['rows_loaded']:,} new, {result['rows_updated']:,} updated, "
            f"{result['rows_unchanged']:,} unchanged"
        )
        if as_json:
            self.stdout.write(json.dumps(result, sort_keys=True))
