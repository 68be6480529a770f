"""python manage.py verify_records [--json]: recompute the compliance records' hash chain."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from inference.compliance import chain_start, verify_records


class Command(BaseCommand):
    help = ("Recompute the hash chain of the compliance records, from the last retention checkpoint to the chain "
            "head. A changed or deleted record is reported by its id; the exit status is then non-zero.")

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the result as one JSON line")
        parser.add_argument("--max-problems", type=int, default=1000, help="Problems listed at most (default 1000)")

    def handle(self, *args, **options):
        result = verify_records(max_problems=max(1, options["max_problems"]))
        start_seq, start_hash = chain_start()
        if options["json"]:
            self.stdout.write(json.dumps({**result.to_dict(), "checkpoint": {"id": start_seq, "hash": start_hash}}))
        else:
            span = f"ids {result.first_seq}..{result.last_seq}" if result.checked else "no records"
            start = f"checkpoint after id {start_seq}" if start_seq else "the genesis"
            self.stdout.write(f"{result.checked} compliance records checked ({span}, from {start}); "
                              f"head hash {result.last_hash}")
            for problem in result.problems or []:
                self.stdout.write(self.style.ERROR(f"  id {problem.seq}: {problem.message}"))
        if not result.ok:
            ids = ", ".join(str(p.seq) for p in result.problems[:20])
            raise CommandError(f"the compliance records do not verify: {len(result.problems)} problem(s) at id(s) {ids}")
        if not options["json"]:
            self.stdout.write(self.style.SUCCESS("OK: the chain verifies"))
