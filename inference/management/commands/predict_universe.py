"""python manage.py predict_universe [--date D] [--models a,b] [--tickers T,U] [--json]"""

import json
from datetime import date

from django.core.management.base import BaseCommand, CommandError

from inference.services import batch_predict


class Command(BaseCommand):
    help = (
        "Predict every ticker of the universe from its latest stored features with each active model and store "
        "the daily predictions with ranks and BUY/HOLD/SELL recommendations."
    )

    def add_arguments(self, parser):
        parser.add_argument("--date", help="Feature date YYYY-MM-DD (default: the latest stored date)")
        parser.add_argument("--models", help="Comma-separated model names (default: every active model)")
        parser.add_argument("--tickers", help="Comma-separated tickers (default: the whole universe)")
        parser.add_argument("--json", action="store_true", help="Print the summary as JSON")

    def handle(self, *args, **options):
        as_of = None
        if options["date"]:
            try:
                as_of = date.fromisoformat(options["date"])
            except ValueError:
                raise CommandError(f"--date: {options['date']!r} is not a date (YYYY-MM-DD)") from None
        models = [m.strip() for m in options["models"].split(",") if m.strip()] if options["models"] else None
        tickers = [t.strip() for t in options["tickers"].split(",") if t.strip()] if options["tickers"] else None
        result = batch_predict(as_of=as_of, model_names=models, tickers=tickers)
        if options["json"]:
            self.stdout.write(json.dumps(result, indent=2, default=str))
        else:
            self.stdout.write(f"date {result['date']}: {result['tickers']} tickers in {result['seconds']:.1f}s")
            for name, info in result["models"].items():
                self.stdout.write(
                    f"  {name}@{info['version']}: {info['rows']} rows "
                    f"(BUY {info['buy']}, HOLD {info['hold']}, SELL {info['sell']}, skipped {info['skipped']})"
                )
            for name, error in result["errors"].items():
                self.stderr.write(f"  {name}: {error}")
            if result["preferred_model"]:
                self.stdout.write(f"recommendations: GET /recommendations (model {result['preferred_model']})")
        if not result["models"]:
            raise CommandError("no predictions were stored: " + "; ".join(
                f"{k}: {v}" for k, v in result["errors"].items()) if result["errors"] else "no active model")
