import logging
import sys

from django.apps import AppConfig
from django.db import DEFAULT_DB_ALIAS
from django.db.models.signals import post_migrate

logger = logging.getLogger(__name__)


def seed_schedules_after_migrate(sender, *, using=DEFAULT_DB_ALIAS, verbosity=1, **kwargs):
    """Seed the beat schedules (``seed_schedules``: matched by name, idempotent) after every ``migrate``,
    so a deployment that only migrates and starts beat (docker compose) has them, exactly once.
    ``migrate`` sends post_migrate once per app: this acts for the training app's only."""
    if sender.name != TrainingConfig.name or using != DEFAULT_DB_ALIAS:
        return
    from django.db import connections
    from django_celery_beat.models import PeriodicTask

    from training.orchestrator.errors import PipelineError
    from training.orchestrator.schedules import seed_schedules

    if PeriodicTask._meta.db_table not in connections[using].introspection.table_names():
        return  # django_celery_beat not migrated (yet): `migrate training` alone
    stdout = kwargs.get("stdout") or sys.stdout
    try:
        rows = seed_schedules()
    except PipelineError as exc:  # a bad schedule in config/pipeline.json must not fail the migration
        logger.error("beat schedules not seeded: %s (fix the config, then manage.py seed_schedules)", exc)
        return
    if verbosity >= 1:
        actions: dict[str, int] = {}
        for row in rows:
            actions[row["action"]] = actions.get(row["action"], 0) + 1
        summary = ", ".join(f"{count} {action}" for action, count in sorted(actions.items()))
        stdout.write(f"Beat schedules (seed_schedules): {summary}\n")
    missing = [row["task"] for row in rows if row["action"] == "missing"]
    if missing:
        logger.warning("beat schedules: no such Celery task: %s", ", ".join(missing))


class TrainingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "training"

    def ready(self):
        post_migrate.connect(seed_schedules_after_migrate, sender=self,
                             dispatch_uid="training.seed_schedules_after_migrate")
        # the registry loads and replays learners through these (it sits below training)
        from registry import loaders
        from training.learners import ArtifactError, load_learner
        from training.selectors import load_training_frame

        loaders.install(loaders.Loaders(load_learner=load_learner, artifact_error=ArtifactError,
                                        load_training_frame=load_training_frame))
        # register the Celery tasks in every process (web, worker, beat): tasks are sent by name, and
        # Celery's autodiscovery imports tasks.py in workers only (and never pipeline_tasks.py)
        from training import pipeline_tasks, tasks  # noqa: F401
