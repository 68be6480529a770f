import json as jsonlib

from django.core.management.base import BaseCommand, CommandError

from training.orchestrator.errors import PipelineError
from training.orchestrator.schedules import seed_schedules


class Command(BaseCommand):
    help = (
        "Seed the periodic tasks into django-celery-beat (daily pipeline, drift check, performance tracking, "
        "alerts, storage cost, the pipeline reaper and dispatcher) from config/pipeline.json. Idempotent: "
        "tasks are matched by name; a task edited in the admin is kept unless --force."
    )

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="Reset tasks edited in the admin to the config")
        parser.add_argument("--json", action="store_true", help="End with one JSON line: the tasks and actions")

    def handle(self, *args, force, **options):
        try:
            rows = seed_schedules(force=force)
        except PipelineError as exc:
            raise CommandError(str(exc)) from exc
        for row in rows:
            detail = f" ({row['detail']})" if row.get("detail") else ""
            self.stdout.write(f"{row['action']:<9} {row['name']}: {row.get('schedule', row['task'])}{detail}")
        if options["json"]:
            self.stdout.write(jsonlib.dumps(rows))
        missing = [r["task"] for r in rows if r["action"] == "missing"]
        if missing:
            self.stderr.write(f"WARNING: not scheduled, no such Celery task: {', '.join(missing)}")
