"""python manage.py poll_quotes [--tickers A,B] [--json]: the provider's intraday snapshot into the
tickers' today-so-far bars, once, now (what the ``inference.poll_quotes`` task does during market hours
when ``ML_INTRADAY_POLL_ENABLED``; this command runs whatever the setting and the hour)."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from features.providers.base import ProviderError
from inference.quotes import quotes_poll


class Command(BaseCommand):
    help = ("Poll the intraday snapshot of ML_INTRADAY_POLL_PROVIDER (polygon) for the tickers (default "
            "ML_INTRADAY_POLL_TICKERS, else every active ticker) and store their today-so-far bars.")

    def add_arguments(self, parser):
        parser.add_argument("--tickers", default="", help="Comma-separated tickers (default: see above)")
        parser.add_argument("--json", action="store_true", help="Print the summary as one JSON line")

    def handle(self, *args, **options):
        tickers = [t for t in options["tickers"].split(",") if t.strip()] or None
        try:
            result = quotes_poll(tickers=tickers, force=True)
        except (ProviderError, ValueError) as exc:  # no key, not a provider with snapshots
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps(result))
        else:
            skipped = ", ".join(f"{n} {reason}" for reason, n in result["skipped"].items()) or "none"
            self.stdout.write(f"{result['provider']}: {result['requested']} tickers requested, {result['received']} "
                              f"received, {result['stored']} bars stored; skipped: {skipped}; {result['calls']} "
                              f"request(s), ${result['cost_usd']:.4f} in {result['seconds']:.2f}s")
        if result["error"]:
            raise CommandError(result["error"])
