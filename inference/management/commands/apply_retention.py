"""python manage.py apply_retention [--json]: the retention limits now (what the daily task does)."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from inference.compliance import apply_retention


class Command(BaseCommand):
    help = ("Delete prediction-log rows older than ML_PREDICTION_LOG_RETENTION_DAYS and compliance records older "
            "than ML_COMPLIANCE_RETENTION_DAYS (whole prefixes of the chain, checkpointed).")

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the summary as one JSON line")

    def handle(self, *args, **options):
        result = apply_retention()
        records = result["compliance"]
        if options["json"]:
            self.stdout.write(json.dumps(result))
        else:
            self.stdout.write(f"prediction log: {result['prediction_log_deleted']} rows deleted "
                              f"(older than {result['prediction_log_retention_days']} days)")
            self.stdout.write(f"compliance records: {records['deleted']} deleted "
                              f"(older than {records['retention_days']} days)"
                              + (f", through id {records['through_id']}" if records["through_id"] else ""))
        if records["error"]:
            raise CommandError(records["error"])
