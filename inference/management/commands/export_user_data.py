"""python manage.py export_user_data USER [--output PATH]: everything stored about an API user (GDPR)."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.core.serializers.json import DjangoJSONEncoder

from inference.gdpr import UnknownUser, export_user_data, find_user


class Command(BaseCommand):
    help = ("Export everything stored about a user (account, API tokens, sessions, admin log, prediction log, "
            "compliance records, runs and alerts naming them) as JSON, with the list of every table read.")

    def add_arguments(self, parser):
        parser.add_argument("user", help="User name (or id)")
        parser.add_argument("--output", help="File to write (default: standard output)")

    def handle(self, *args, **options):
        try:
            user = find_user(options["user"])
        except UnknownUser as exc:
            raise CommandError(str(exc)) from None
        data = export_user_data(user)
        text = json.dumps(data, cls=DjangoJSONEncoder, indent=2, ensure_ascii=False)
        if options["output"]:
            Path(options["output"]).write_text(text + "\n", encoding="utf-8")
            self.stdout.write(f"wrote {options['output']}")
        else:
            self.stdout.write(text)
        self.stderr.write("tables read: " + ", ".join(data["tables_read"]))
