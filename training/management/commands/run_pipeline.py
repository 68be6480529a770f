import json as jsonlib

from django.core.management.base import BaseCommand, CommandError

from training.models import PipelineRun
from training.orchestrator.errors import PipelineError
from training.orchestrator.selectors import format_run, last_succeeded_run, pipeline_run_summary
from training.orchestrator.triggers import request_pipeline_run


class Command(BaseCommand):
    help = (
        "Run the daily pipeline (update market data, build features, train, evaluate, promote, batch-predict, "
        "check drift). Queues it on Celery, or runs every stage in this process with --sync (cron, CI)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--sync", action="store_true", help="Run every stage in this process, with progress")
        parser.add_argument("--tickers", help="Comma-separated tickers (default: the whole universe)")
        parser.add_argument("--models", help="Comma-separated learners to train (default: every enabled one)")
        parser.add_argument("--reason", default="", help="Why (recorded with the trigger)")
        parser.add_argument("--skip-if-succeeded", action="store_true",
                            help="Do nothing if a run of the same scope has already succeeded (make run uses it)")
        parser.add_argument("--noop", type=float, metavar="SECONDS",
                            help="Smoke run: every stage only waits SECONDS (checks workers, limits, schedules)")
        parser.add_argument("--evaluation", choices=("auto", "full"),
                            help="auto (default): walk-forward evaluation every training.reevaluate_every_trading_days, "
                                 "refits in between; full: evaluate every learner now")
        parser.add_argument("--json", action="store_true", help="End with one JSON line: the run")

    def handle(self, *args, sync, tickers, models, reason, skip_if_succeeded, noop, evaluation, **options):
        symbols = [t.strip() for t in (tickers or "").split(",") if t.strip()]
        if skip_if_succeeded:
            done = last_succeeded_run(tickers=symbols)
            if done is not None:
                self.stdout.write(f"pipeline run {done.pk} already succeeded at {done.finished_at:%Y-%m-%d %H:%M} UTC "
                                  "for this scope; skipped (drop --skip-if-succeeded to run again)")
                if options["json"]:
                    self.stdout.write(jsonlib.dumps({**pipeline_run_summary(done), "skipped_by_command": True}))
                return
        run_options = {"models": [m.strip() for m in models.split(",") if m.strip()] if models else None,
                       "noop_seconds": noop, "evaluation": evaluation}
        try:
            run = request_pipeline_run(
                trigger="command", requested_by="manage.py run_pipeline", tickers=symbols or None, sync=sync,
                reason=reason, options=run_options, progress=self.stdout.write if sync else None,
            )
        except PipelineError as exc:
            raise CommandError(str(exc)) from exc
        summary = pipeline_run_summary(run)
        if getattr(run, "deduplicated", False) and run.status in PipelineRun.ACTIVE:
            self.stdout.write(f"a run of the same scope is already {run.status}: pipeline run {run.pk}; "
                              "not starting a second one (follow it with: python manage.py retrain --status)")
        elif sync or run.status in PipelineRun.FINISHED:
            for line in format_run(summary):
                self.stdout.write(line)
        else:
            self.stdout.write(f"pipeline run {run.pk} {run.status} on Celery (task {run.celery_task_id or '-'}); "
                              "follow it with: python manage.py retrain --status")
        if options["json"]:
            self.stdout.write(jsonlib.dumps(summary, default=str))
        if run.status in (PipelineRun.Status.FAILED, PipelineRun.Status.CANCELLED) and not getattr(
                run, "deduplicated", False):
            raise CommandError((run.error or run.status_reason or f"pipeline run {run.pk} {run.status}").strip())
