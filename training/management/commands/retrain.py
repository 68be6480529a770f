import json as jsonlib

from django.core.management.base import BaseCommand, CommandError

from training.config import RetrainError
from training.orchestrator.selectors import format_run, pipeline_run_summary, recent_pipeline_runs
from training.runs import training_run_summary
from training.selectors import recent_runs
from training.services import retrain


class Command(BaseCommand):
    help = (
        "Retrain models: walk-forward evaluation, final fit, registry version and promotion gate per learner, "
        "then the ensemble. Queues the run on Celery, or runs it here with --sync. --status shows recent runs."
    )

    def add_arguments(self, parser):
        parser.add_argument("--models", help="Comma-separated learners (default: every enabled one)")
        parser.add_argument("--tickers", help="Comma-separated tickers (default: the whole universe)")
        parser.add_argument("--sync", action="store_true", help="Run in this process instead of on Celery")
        parser.add_argument("--status", action="store_true",
                            help="Show recent pipeline runs and training runs, with their stages")
        parser.add_argument("--limit", type=int, default=5, help="How many runs --status shows")
        parser.add_argument("--json", action="store_true", help="End with one JSON line (the run, or runs)")

    def handle(self, *args, models, tickers, sync, status, limit, **options):
        if status:
            pipelines = recent_pipeline_runs(limit=limit)
            for pipeline in pipelines:
                for line in format_run(pipeline_run_summary(pipeline)):
                    self.stdout.write(line)
            runs = list(recent_runs(limit=limit))
            for run in runs:
                self._print_run(training_run_summary(run))
            if not runs:
                self.stdout.write("no training runs yet: python manage.py retrain --sync")
            if options["json"]:
                # One line with the pipeline runs, then the training runs' list as the last line (as before).
                self.stdout.write(jsonlib.dumps({"pipeline_runs": [pipeline_run_summary(p) for p in pipelines]},
                                                default=str))
                self.stdout.write(jsonlib.dumps([training_run_summary(r) for r in runs], default=str))
            return
        try:
            run = retrain(
                models=_split(models), tickers=_split(tickers), trigger="command", requested_by="manage.py retrain",
                sync=sync,
            )
        except RetrainError as exc:
            raise CommandError(str(exc)) from exc
        summary = training_run_summary(run)
        if sync:
            self._print_run(summary)
        else:
            self.stdout.write(f"queued training run {run.pk} (Celery task {run.celery_task_id or '-'}); "
                              "follow it with: python manage.py retrain --status")
        if options["json"]:
            self.stdout.write(jsonlib.dumps(summary, default=str))
        if sync and run.status == run.Status.FAILED:
            raise CommandError(run.error.strip() or f"training run {run.pk} failed")

    def _print_run(self, s: dict) -> None:
        duration = f"{s['duration_seconds']:.1f}s" if s["duration_seconds"] is not None else "-"
        self.stdout.write(
            f"training run {s['id']}: {s['status']} ({s['trigger']}, {s['requested_by'] or '-'}) "
            f"created {s['created_at']}, duration {duration}, {s['cpu_seconds']:.1f} CPU s, ${s['cost_usd']:.6f}; "
            f"models {', '.join(s['models'])}; tickers {_tickers(s['tickers'])}"
        )
        for st in s["stages"] or []:
            counts = ", ".join(f"{k}={v}" for k, v in (st.get("counts") or {}).items()
                               if not isinstance(v, dict | list))
            self.stdout.write(f"  {st['name']:<34} {st['status']:<10} {st['seconds']:>9.1f}s"
                              + (f"  {counts}" if counts else "") + (f"  {st['error']}" if st.get("error") else ""))
        for v in s["versions"]:
            self.stdout.write(f"  -> {v['model']}@{v['version']}: {v['status']} ({v['reason']})")
        if s["pending"] and s["status"] == "running":
            self.stdout.write(f"  waiting for: {', '.join(s['pending'])}")
        if s["error"]:
            self.stdout.write(s["error"].rstrip())


def _split(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _tickers(tickers) -> str:
    if isinstance(tickers, str):
        return tickers
    shown = ",".join(tickers[:8])
    return shown + (f",... ({len(tickers)} in all)" if len(tickers) > 8 else "")
