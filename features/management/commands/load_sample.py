from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Ingest the bundled sample (prices and fundamentals under ML_DATA_PATH, default ./sample_data)."

    def handle(self, *args, **options):
        root = settings.ML_DATA_PATH
        prices, fundamentals = root / "prices", root / "fundamentals"
        if not prices.is_dir():
            raise CommandError(f"no sample prices at {prices} (set ML_DATA_PATH)")
        call_command("ingest_prices", str(prices), stdout=self.stdout, stderr=self.stderr)
        if fundamentals.is_dir():
            call_command("ingest_fundamentals", str(fundamentals), stdout=self.stdout, stderr=self.stderr)
