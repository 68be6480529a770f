"""python manage.py erase_user USER [--dry-run] [--json]: erase a user's personal data (GDPR)."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from inference.gdpr import UnknownUser, erase_user, find_user


class Command(BaseCommand):
    help = ("Delete a user's account, tokens, sessions and admin log entries; replace their name where they acted "
            "by 'erased user'; keep their compliance records pseudonymized (the chain still verifies).")

    def add_arguments(self, parser):
        parser.add_argument("user", help="User name (or id)")
        parser.add_argument("--dry-run", action="store_true", help="Count what would change; change nothing")
        parser.add_argument("--json", action="store_true", help="Print the summary as one JSON line")

    def handle(self, *args, **options):
        try:
            user = find_user(options["user"])
        except UnknownUser as exc:
            raise CommandError(str(exc)) from None
        result = erase_user(user, dry_run=options["dry_run"])
        if options["json"]:
            self.stdout.write(json.dumps(result))
            return
        verb = "would change" if options["dry_run"] else "erased"
        self.stdout.write(f"{result['user']}: {verb} " + (", ".join(
            f"{table} {n}" for table, n in result["changed"].items()) or "nothing"))
        self.stdout.write(f"compliance records: {result['compliance_records']}")
        self.stdout.write("tables read: " + ", ".join(result["tables_read"]))
