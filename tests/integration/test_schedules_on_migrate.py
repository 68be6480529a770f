"""A deployment that only runs ``migrate`` and starts beat (docker compose: the migrate service, then
beat) holds the daily 02:00 UTC pipeline and the monitoring tasks exactly once, also after restarts:
``migrate`` seeds them (a post_migrate handler, matched by name), beat's DatabaseScheduler reads them.

Transactional: the scheduler commits and closes connections as beat does, which a test transaction
would not survive."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db.models.signals import post_migrate
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from investml.celery import app
from training.orchestrator.schedules import schedule_specs

pytestmark = [pytest.mark.django_db(transaction=True)]

DAILY = "investml: daily pipeline"
MONITORING = {
    "investml: drift check": "monitoring.check_drift",
    "investml: performance tracking": "monitoring.track_performance",
    "investml: evaluate alerts": "monitoring.evaluate_alerts",
    "investml: storage cost": "monitoring.record_storage_cost",
}


def _start_beat() -> DatabaseScheduler:
    """What ``celery -A investml beat`` builds at start (CELERY_BEAT_SCHEDULER)."""
    assert app.conf.beat_scheduler == "django_celery_beat.schedulers:DatabaseScheduler"
    scheduler = DatabaseScheduler(app=app)
    scheduler.sync()
    return scheduler


def _assert_seeded_once() -> None:
    daily = PeriodicTask.objects.filter(name=DAILY)
    assert daily.count() == 1
    task = daily.get()
    assert task.enabled and task.task == "training.pipeline.run_daily"
    assert (task.crontab.minute, task.crontab.hour, task.crontab.day_of_week, task.crontab.day_of_month,
            str(task.crontab.timezone)) == ("0", "2", "*", "*", "UTC")
    for name, task_name in MONITORING.items():
        assert list(PeriodicTask.objects.filter(name=name).values_list("task", "enabled")) == [(task_name, True)], name
    assert PeriodicTask.objects.filter(name__startswith="investml: ").count() == len(schedule_specs())


def test_migrate_alone_seeds_the_schedules_and_beat_restarts_keep_one_of_each():
    # a database whose schedules were never seeded (the test database's own migrate seeded it)
    PeriodicTask.objects.filter(name__startswith="investml: ").delete()
    assert not PeriodicTask.objects.filter(name=DAILY).exists()

    call_command("migrate", interactive=False, verbosity=0)  # nothing to apply: post_migrate still runs
    _assert_seeded_once()

    for _restart in range(2):  # beat started twice, with a migrate before each (compose restarts)
        call_command("migrate", interactive=False, verbosity=0)
        scheduler = _start_beat()
        # beat holds the every-minute tasks now; crontab tasks from 2 hours before they are due
        assert "investml: evaluate alerts" in scheduler.schedule
        entry = scheduler.Entry(PeriodicTask.objects.get(name=DAILY), app=app)  # what beat builds then
        assert entry.task == "training.pipeline.run_daily"
        assert entry.schedule.hour == {2} and entry.schedule.minute == {0} and str(entry.schedule.tz) == "UTC"
        _assert_seeded_once()


def test_the_seeding_handler_is_connected_to_post_migrate():
    from django.apps import apps as registry

    from training import apps

    sync_receivers, _async_receivers = post_migrate._live_receivers(registry.get_app_config("training"))
    assert apps.seed_schedules_after_migrate in sync_receivers
    # migrate sends post_migrate once per app: the handler acts for the training app only, idempotently
    PeriodicTask.objects.filter(name__startswith="investml: ").delete()
    for config in registry.get_app_configs():
        apps.seed_schedules_after_migrate(sender=config, using="default", verbosity=0)
    apps.seed_schedules_after_migrate(sender=registry.get_app_config("training"), using="default", verbosity=0)
    _assert_seeded_once()
