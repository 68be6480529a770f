"""The orchestrator's periodic tasks (django-celery-beat): what is scheduled, from config/pipeline.json's
``training`` section, and ``seed_schedules``, which creates or updates them by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from investml.celery import app
from investml.pipeline_config import ScheduleConfig
from training.orchestrator.config import orchestrator_settings

SEED_MARK = "seeded: "


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    task: str
    description: str
    automatic: bool  # switched off by orchestrator.enable_scheduling = false
    crontab: dict[str, str] | None = None
    every_seconds: int | None = None
    # a message not started within this many seconds is dropped: a stopped worker must not find a
    # backlog of every-minute runs when it comes back
    expire_seconds: int | None = None


def _crontab(schedule: ScheduleConfig) -> dict[str, str]:
    hour, minute = (int(part) for part in schedule.time_of_day.split(":"))
    fields = {"minute": str(minute), "hour": str(hour), "day_of_week": "*", "day_of_month": "*",
              "month_of_year": "*"}
    if schedule.frequency == "hourly":
        fields["hour"] = "*"
    elif schedule.frequency == "weekly":
        fields["day_of_week"] = str(schedule.day_of_week)
    return fields


def schedule_specs() -> list[ScheduleSpec]:
    """The periodic tasks the orchestrator seeds, from config/pipeline.json's ``training`` section."""
    training = settings.PIPELINE_CONFIG.training
    daily = _crontab(training.default_schedule)
    drift = _crontab(training.drift_schedule)
    return [
        ScheduleSpec("investml: daily pipeline", "training.pipeline.run_daily",
                     "The daily pipeline on the whole universe (training.default_schedule, UTC).", True, crontab=daily),
        ScheduleSpec("investml: drift check", "monitoring.check_drift",
                     "Drift of the active models' recent features (training.drift_schedule, UTC); a newly "
                     "opened drift alert requests a retrain.", True, crontab=drift),
        ScheduleSpec("investml: performance tracking", "monitoring.track_performance",
                     "Realized accuracy of the stored predictions (training.drift_schedule, UTC); a newly "
                     "opened low-accuracy alert requests a retrain.", True, crontab=drift),
        ScheduleSpec("investml: evaluate alerts", "monitoring.evaluate_alerts",
                     "Every alert rule, every minute.", False, every_seconds=60, expire_seconds=55),
        ScheduleSpec("investml: storage cost", "monitoring.record_storage_cost",
                     "The day's storage cost, once a day.", False,
                     crontab={"minute": "55", "hour": "23", "day_of_week": "*", "day_of_month": "*",
                              "month_of_year": "*"}),
        ScheduleSpec("investml: reap stale pipeline runs", "training.pipeline.reap_stale",
                     "Pipeline runs whose worker is gone: fail the attempt, queue them again. Training runs "
                     "whose trainer is lost: send the task again (fail one run in place, --sync).", False,
                     every_seconds=60, expire_seconds=55),
        ScheduleSpec("investml: dispatch queued pipeline runs", "training.pipeline.dispatch_queued",
                     "Start queued pipeline runs while slots are free.", False, every_seconds=60, expire_seconds=55),
        ScheduleSpec("investml: data retention", "inference.apply_retention",
                     "Delete prediction-log rows older than ML_PREDICTION_LOG_RETENTION_DAYS and compliance records "
                     "older than ML_COMPLIANCE_RETENTION_DAYS (whole chain prefixes, checkpointed), daily.", False,
                     crontab={"minute": "40", "hour": "3", "day_of_week": "*", "day_of_month": "*",
                              "month_of_year": "*"}),
        # after the US close and the day's price update, before the next 02:00 pipeline, which uses them
        ScheduleSpec("investml: news", "features.update_news",
                     "The active tickers' new headlines from ML_NEWS_PROVIDER, daily; a no-op without one.", True,
                     crontab={"minute": "30", "hour": "22", "day_of_week": "*", "day_of_month": "*",
                              "month_of_year": "*"}),
        ScheduleSpec("investml: fundamentals refresh", "features.refresh_fundamentals",
                     "Each active ticker's fundamentals from ML_FUNDAMENTALS_PROVIDER once every "
                     "ML_FUNDAMENTALS_REFRESH_DAYS (7): the day's share of the universe, within the provider's "
                     "remaining daily quota; a no-op without a provider.", True,
                     crontab={"minute": "15", "hour": "23", "day_of_week": "*", "day_of_month": "*",
                              "month_of_year": "*"}),
        ScheduleSpec("investml: intraday quotes", "inference.poll_quotes",
                     "The provider's intraday snapshot into the API's today-so-far bars, every minute; a no-op unless "
                     "ML_INTRADAY_POLL_ENABLED and within ML_INTRADAY_POLL_HOURS of a trading day.", False,
                     every_seconds=60, expire_seconds=55),
    ]


def _schedule_signature(task: Any) -> str:
    if task.crontab_id:
        c = task.crontab
        when = f"crontab {c.minute} {c.hour} {c.day_of_month} {c.month_of_year} {c.day_of_week} {c.timezone}"
    elif task.interval_id:
        when = f"every {task.interval.every} {task.interval.period}"
    else:
        when = "other"
    return f"{task.task} {when} enabled={task.enabled}"


def _seeded_signature(description: str) -> str:
    lines = [line for line in (description or "").splitlines() if line.startswith(SEED_MARK)]
    return lines[-1][len(SEED_MARK):] if lines else ""


def seed_schedules(*, force: bool = False) -> list[dict[str, Any]]:
    """Create or update the orchestrator's periodic tasks (django-celery-beat), by name: re-seeding
    never duplicates. A task edited in the admin since it was seeded is kept as edited (``force``
    resets it), except that ``orchestrator.enable_scheduling = false`` always disables the automatic
    ones (daily pipeline, drift check, performance tracking). Returns one row per task."""
    cfg = orchestrator_settings()
    app.loader.import_default_modules()  # Celery's autodiscovery of every app's tasks module (lazy outside workers)
    registered = set(app.tasks.keys())
    results: list[dict[str, Any]] = []
    for spec in schedule_specs():
        if spec.task not in registered:
            results.append({"name": spec.name, "task": spec.task, "action": "missing",
                            "detail": f"no Celery task named {spec.task}; not scheduled"})
            continue
        enabled = cfg.enable_scheduling or not spec.automatic
        with transaction.atomic():
            task = PeriodicTask.objects.select_for_update().filter(name=spec.name).first()
            before = _schedule_signature(task) if task is not None else ""
            edited = task is not None and _seeded_signature(task.description) != before
            if edited and not force:
                action, detail = "kept", "edited in the admin since it was seeded (--force resets it)"
                if spec.automatic and not cfg.enable_scheduling and task.enabled:
                    task.enabled = False
                    task.save(update_fields=["enabled"])
                    action, detail = "disabled", "orchestrator.enable_scheduling is false (schedule kept as edited)"
                results.append({"name": spec.name, "task": spec.task, "action": action, "detail": detail,
                                "schedule": _schedule_signature(task)})
                continue
            if spec.crontab is not None:
                crontab, _ = CrontabSchedule.objects.get_or_create(**spec.crontab, timezone="UTC")
                interval = None
            else:
                interval, _ = IntervalSchedule.objects.get_or_create(every=int(spec.every_seconds or 60),
                                                                     period=IntervalSchedule.SECONDS)
                crontab = None
            if task is None:
                task = PeriodicTask(name=spec.name)
            task.task, task.crontab, task.interval, task.solar, task.clocked = spec.task, crontab, interval, None, None
            task.enabled, task.one_off = enabled, False
            task.expire_seconds = spec.expire_seconds
            task.description = f"{spec.description}\n{SEED_MARK}{_schedule_signature(task)}"
            task.save()
            after = _schedule_signature(task)
        action = "created" if not before else ("updated" if after != before or edited else "unchanged")
        results.append({"name": spec.name, "task": spec.task, "action": action, "schedule": after,
                        "detail": "" if enabled else "disabled: orchestrator.enable_scheduling is false"})
    return results

