"""python manage.py export_records --from YYYY-MM-DD --to YYYY-MM-DD [--output PATH] [--format jsonl|csv]"""

from __future__ import annotations

import csv
import json
from datetime import date
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from inference.compliance import records_between
from inference.records_chain import FIELDS, timestamp


def _day(value: str, flag: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{flag}: {value!r} is not a date (YYYY-MM-DD)") from None


class Command(BaseCommand):
    help = ("Export the compliance records (served predictions of tickers, recommendations) made on the UTC days "
            "--from..--to, in chain order, as JSON lines (default) or CSV, with their hashes.")

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="start", required=True, help="First day, YYYY-MM-DD (UTC)")
        parser.add_argument("--to", dest="end", required=True, help="Last day, YYYY-MM-DD (UTC), included")
        parser.add_argument("--output", help="File to write (default: standard output)")
        parser.add_argument("--format", choices=["jsonl", "csv"],
                            help="jsonl (default) or csv (default for an --output ending in .csv)")

    def handle(self, *args, **options):
        start, end = _day(options["start"], "--from"), _day(options["end"], "--to")
        if end < start:
            raise CommandError(f"--to {end} is before --from {start}")
        output = options["output"]
        fmt = options["format"] or ("csv" if output and output.lower().endswith(".csv") else "jsonl")
        handle = Path(output).open("w", encoding="utf-8", newline="") if output else None
        stream = handle or self.stdout
        count = 0
        try:
            writer = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None
            if writer is not None:
                writer.writerow(FIELDS)
            for row in records_between(start, end):
                row = {**row, "created_at": timestamp(row["created_at"])}
                if writer is not None:
                    writer.writerow([row[f] if row[f] is not None else "" for f in FIELDS])
                else:
                    # ``output`` as stored (the hashed text) and parsed, for reading
                    line = {**row, "output_data": json.loads(row["output"])}
                    stream.write(json.dumps(line, ensure_ascii=False) + "\n")
                count += 1
        finally:
            if handle is not None:
                handle.close()
        where = output or "standard output"
        (self.stderr if not output else self.stdout).write(
            f"{count} compliance records of {start}..{end} written to {where} ({fmt})"
        )
