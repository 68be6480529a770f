import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from features.feature_sets import FEATURE_SETS
from features.services.feature_store import DEFAULT_CHUNK_SIZE, build_features, export_feature_matrix
from features.services.store_errors import FeatureStoreError


class Command(BaseCommand):
    help = (
        "Materialize features and labels into the offline Parquet store (incremental unless --full or "
        "nothing is stored yet) and refresh the online store. --export writes the feature matrix "
        "(ticker, date, every feature column) of the selection to a Parquet file."
    )

    def add_arguments(self, parser):
        parser.add_argument("--feature-set", help=f"{', '.join(sorted(FEATURE_SETS))} or a set created in the admin "
                            "(default: training.feature_set of the pipeline config)")
        parser.add_argument("--start", help="First date to write, YYYY-MM-DD")
        parser.add_argument("--end", help="Last date to use and write, YYYY-MM-DD")
        parser.add_argument("--tickers", help="Comma-separated tickers (default: every ticker with bars)")
        parser.add_argument("--full", action="store_true", help="Recompute every date instead of only new ones")
        parser.add_argument("--export", type=Path, metavar="PATH.parquet")
        parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
        parser.add_argument("--json", action="store_true", dest="as_json", help="End with one JSON line")

    def handle(self, *args, feature_set, start, end, tickers, full, export, chunk_size, as_json, **options):
        names = [t for t in tickers.split(",") if t.strip()] if tickers else None
        if export is not None and not export.parent.is_dir():
            raise CommandError(f"--export: folder {export.parent} does not exist")
        try:
            summary = build_features(feature_set=feature_set, start=start, end=end, tickers=names, full=full,
                                     progress=self.stderr.write, chunk_size=chunk_size)
            result = summary.as_dict()
            if export is not None:
                rows = export_feature_matrix(path=export, feature_set_version=summary.version_id,
                                             start=start, end=end, tickers=names)
                result["export"] = {"path": str(export), "rows": rows}
        except FeatureStoreError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(summary.line())
        if export is not None:
            self.stdout.write(f"exported {result['export']['rows']:,} rows to {export}")
        if as_json:
            self.stdout.write(json.dumps(result, sort_keys=True))
