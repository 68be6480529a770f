import json as jsonlib
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from django.core.management.base import BaseCommand, CommandError

from features.store_format import atomic_write_bytes
from registry.models import ModelVersion
from registry.selectors import active_version, latest_version, load_oof
from training.config import ALL_LEARNERS, BASE_LEARNERS, RetrainError, horizon_days
from training.evaluation_report import evaluation_report
from training.models import TrainingRun
from training.report_table import PREDICTION_COLUMNS, format_report, report_from_tables
from training.selectors import NoTrainingData, tickers_with_history

HORIZON_KEY = b"investml.horizon"


class Command(BaseCommand):
    help = (
        "Qlib-style benchmark table (IC, ICIR, Rank IC, Rank ICIR, Rank IC t, annual return net of costs, "
        "information ratio, turnover, max drawdown, rank IC by year) for each learner, the ensemble and the "
        "naive baselines, walk-forward out of sample on the same rows. Trains fresh walk-forward models "
        "(nothing is registered), or with --registry reads the registered versions' stored out-of-sample "
        "predictions."
    )

    def add_arguments(self, parser):
        parser.add_argument("--start", type=date.fromisoformat, help="First date (YYYY-MM-DD)")
        parser.add_argument("--end", type=date.fromisoformat, help="Last date (YYYY-MM-DD)")
        parser.add_argument("--tickers", type=int, help="Use the first N tickers (by symbol) with full history")
        parser.add_argument("--symbols", help="Comma-separated tickers instead of --tickers N")
        parser.add_argument("--models", help="Comma-separated learners (default: all)")
        parser.add_argument("--registry", action="store_true",
                            help="Use the active (else newest) registered versions' out-of-sample predictions")
        parser.add_argument("--run", type=int, help="Use the versions registered by this training run")
        parser.add_argument("--folds", type=int, help="Walk-forward folds (default ML_WALK_FORWARD_FOLDS, 3)")
        parser.add_argument("--test-days", type=int,
                            help="Dates per test fold (default ML_WALK_FORWARD_TEST_DAYS, 63)")
        parser.add_argument("--min-train-days", type=int,
                            help="Fewest training dates before the first fold (default "
                                 "ML_WALK_FORWARD_MIN_TRAIN_DAYS, 252)")
        parser.add_argument("--yearly", action="store_true",
                            help="One test fold per calendar year, each refitted on all earlier dates "
                                 "(the years after --min-train-days; --folds/--test-days do not apply)")
        parser.add_argument("--cost-bps", type=float, default=10.0,
                            help="Cost of the long-short book per side traded, in basis points (default 10)")
        parser.add_argument("--hold-days", type=int, default=1,
                            help="Rebalance the decile book every N trading days (default 1: daily; the horizon "
                                 "trades each forecast for the period it is made for)")
        parser.add_argument("--horizon", type=int, help="Label horizon in trading days (default training.horizon_days)")
        parser.add_argument("--save-predictions", type=Path, metavar="DIR",
                            help="Write each learner's and the ensemble's out-of-sample predictions to "
                                 "DIR/<model>.parquet")
        parser.add_argument("--reuse-predictions", type=Path, metavar="DIR",
                            help="Take the learners' predictions from DIR/<learner>.parquet (an earlier "
                                 "--save-predictions over the same window, folds and horizon) instead of "
                                 "training them again; the ensemble and the baselines are recomputed")
        parser.add_argument("--markdown", action="store_true", help="Print a Markdown table")
        parser.add_argument("--json", action="store_true", help="End with one JSON line")

    def handle(self, *args, start, end, tickers, symbols, models, registry, run, markdown, folds, test_days,
               min_train_days, yearly, cost_bps, horizon, hold_days, save_predictions, reuse_predictions,
               **options):
        names = [m.strip() for m in models.split(",")] if models else None
        if cost_bps < 0:
            raise CommandError("--cost-bps must be >= 0")
        if horizon is not None and horizon < 1:
            raise CommandError("--horizon must be >= 1")
        if hold_days < 1:
            raise CommandError("--hold-days must be >= 1")
        if yearly and (folds is not None or test_days is not None):
            raise CommandError("--yearly makes one fold per calendar year: drop --folds/--test-days")
        if registry or run:
            if save_predictions or reuse_predictions:
                raise CommandError("--save-predictions/--reuse-predictions apply to fresh walk-forward models")
            if yearly or folds is not None or test_days is not None or min_train_days is not None or horizon:
                raise CommandError("--folds/--test-days/--min-train-days/--yearly train fresh models; the "
                                   "registered versions' folds and horizon are fixed (drop --registry/--run)")
            report = self._from_registry(names, run, cost_bps=cost_bps, hold_days=hold_days)
        else:
            chosen = [s.strip().upper() for s in symbols.split(",") if s.strip()] if symbols else None
            if tickers and not chosen:
                chosen = tickers_with_history(start=start, end=end, limit=tickers)
                if not chosen:
                    raise CommandError("no tickers have price history in that window")
            report_horizon = horizon or horizon_days()
            reused = self._read_predictions(reuse_predictions, report_horizon) if reuse_predictions else None
            saver = self._writer(save_predictions, report_horizon) if save_predictions else None
            try:
                report = evaluation_report(start=start, end=end, tickers=chosen, models=names,
                                           progress=lambda msg: self.stderr.write(msg), folds=folds,
                                           test_days=test_days, min_train_days=min_train_days, yearly=yearly,
                                           cost_bps=cost_bps, horizon=horizon, hold_days=hold_days,
                                           member_predictions=reused, on_predictions=saver)
            except (RetrainError, NoTrainingData, ValueError) as exc:
                raise CommandError(str(exc)) from exc
        self.stdout.write(format_report(report, markdown=markdown))
        if options["json"]:
            self.stdout.write(jsonlib.dumps(report, default=str))

    def _writer(self, folder: Path, horizon: int):
        folder.mkdir(parents=True, exist_ok=True)

        def write(name: str, table: pd.DataFrame) -> None:
            out = table[PREDICTION_COLUMNS]
            arrow = pa.Table.from_pandas(out, preserve_index=False)
            arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), HORIZON_KEY: str(horizon).encode()})
            buf = pa.BufferOutputStream()
            pq.write_table(arrow, buf, compression="zstd")
            atomic_write_bytes(folder / f"{name}.parquet", buf.getvalue(), fsync=True)
            self.stderr.write(f"{name}: {len(out):,} predictions written to {folder / f'{name}.parquet'}")

        return write

    def _read_predictions(self, folder: Path, horizon: int) -> dict[str, pd.DataFrame]:
        if not folder.is_dir():
            raise CommandError(f"--reuse-predictions: {folder} is not a directory")
        found = {}
        for name in BASE_LEARNERS:
            path = folder / f"{name}.parquet"
            if not path.exists():
                continue
            table = pq.read_table(path)
            saved_horizon = (table.schema.metadata or {}).get(HORIZON_KEY, b"?").decode()
            if saved_horizon != str(horizon):
                raise CommandError(f"{path}: predictions for horizon {saved_horizon}, this report's is {horizon}")
            found[name] = table.to_pandas()
        if not found:
            raise CommandError(f"--reuse-predictions: no <learner>.parquet in {folder} "
                               f"(learners: {', '.join(BASE_LEARNERS)})")
        return found

    def _from_registry(self, names, run_id, *, cost_bps, hold_days):
        tables = {}
        for name in names or ALL_LEARNERS:
            if name not in ALL_LEARNERS:
                raise CommandError(f"unknown model {name!r} (known: {', '.join(ALL_LEARNERS)})")
            if run_id:
                version = ModelVersion.objects.filter(training_run_id=run_id, model__name=name).first()
            else:
                version = active_version(model_name=name) or latest_version(model_name=name)
            table = load_oof(version=version) if version is not None else None
            if table is not None:
                tables[f"{name}@{version.version}"] = table
        if not tables:
            raise CommandError(f"no registered versions with out-of-sample predictions among {', '.join(BASE_LEARNERS)}"
                               " and ensemble; run python manage.py retrain first")
        extra = {"source": f"training run {run_id}" if run_id else "registry"}
        if run_id:
            extra["tickers"] = TrainingRun.objects.get(pk=run_id).options.get("n_tickers", "?")
        return report_from_tables(tables, horizon=horizon_days(), extra=extra, cost_bps=cost_bps, hold_days=hold_days)
