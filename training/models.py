"""Training runs: one row per retrain, with its stages, log, metrics and measured cost."""

from __future__ import annotations

from django.db import models


class TrainingRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    trigger = models.CharField(max_length=30, default="manual", help_text="command, api, admin, schedule, drift...")
    requested_by = models.CharField(max_length=150, blank=True)
    model_names = models.JSONField(default=list, help_text="Learner names trained in this run")
    tickers = models.JSONField(default=list, blank=True, help_text="Scope; empty means the whole universe")
    feature_set_version = models.ForeignKey(
        "features.FeatureSetVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="training_runs"
    )
    stages = models.JSONField(default=list, blank=True, help_text="[{name, status, started_at, seconds, counts}]")
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="model name -> overall OOS metrics")
    options = models.JSONField(
        default=dict, blank=True, help_text="Run parameters: horizon, window, walk-forward settings"
    )
    parts_pending = models.JSONField(
        default=list, blank=True, help_text="Parts still running elsewhere (Celery chunk groups)"
    )
    cpu_seconds = models.FloatField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    celery_task_id = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(
        null=True, blank=True,
        help_text="Kept fresh by the process training the run (options['worker']) while its main part runs",
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"training run {self.id} ({self.status})"

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


# --------------------------------------------------------------------------------------------------
# The orchestrator: daily pipeline runs, their stages, retrain triggers and the cross-machine lock.


class PipelineRun(models.Model):
    """One run of the daily pipeline (update data, build features, train, evaluate, promote,
    batch-predict, check drift), whatever triggered it. At most one active run per scope."""

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        DRIFT = "drift", "Data drift"
        PERFORMANCE = "performance", "Performance degradation"
        API = "api", "API"
        ADMIN = "admin", "Admin"
        COMMAND = "command", "Command"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        RETRYING = "retrying", "Retrying"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        SKIPPED = "skipped", "Skipped"

    ACTIVE = (Status.QUEUED, Status.RUNNING, Status.RETRYING)
    HOLDING_SLOT = (Status.RUNNING, Status.RETRYING)
    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.SKIPPED)

    trigger = models.CharField(max_length=16, choices=Trigger.choices, db_index=True)
    reason = models.TextField(blank=True, help_text="Why it was requested (e.g. the drift alert's message)")
    requested_by = models.CharField(max_length=150, blank=True)
    scope = models.CharField(max_length=80, db_index=True,
                             help_text='"universe", or "tickers:<hash>" of the sorted ticker list')
    tickers = models.JSONField(default=list, blank=True, help_text="Scope; empty means the whole universe")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    status_reason = models.TextField(blank=True, help_text="Why it was skipped, cancelled or failed")
    mode = models.CharField(max_length=10, default="celery", help_text="celery (chain on workers) or sync (in-process)")
    options = models.JSONField(default=dict, blank=True, help_text="Run options, e.g. noop_seconds for smoke runs")
    attempts = models.PositiveIntegerField(default=0, help_text="Stage attempts beyond the first, plus one")
    generation = models.PositiveIntegerField(
        default=0, help_text="Fencing token: +1 each time the run is (re)dispatched; stale tasks stop"
    )
    current_stage = models.CharField(max_length=40, blank=True)
    error = models.TextField(blank=True)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    training_run = models.ForeignKey(
        TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="pipeline_runs"
    )
    celery_task_id = models.CharField(max_length=100, blank=True, help_text="The chain's first task")
    worker_host = models.CharField(max_length=200, blank=True)
    worker_pid = models.PositiveIntegerField(null=True, blank=True, help_text="Set while a stage runs in-process")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="When a retrying stage runs again")
    running_at_start = models.PositiveSmallIntegerField(
        default=0, help_text="Pipeline runs holding a slot when this one took its own (this one included)"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["scope"], condition=models.Q(status__in=["queued", "running", "retrying"]),
                name="pipeline_one_active_run_per_scope",
            ),
        ]

    def __str__(self) -> str:
        return f"pipeline run {self.id} ({self.status})"

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class PipelineStage(models.Model):
    """One attempt of one stage of a pipeline run, with its timings and counts."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        DEGRADED = "degraded", "Failed, run continued"
        SKIPPED = "skipped", "Skipped"

    DONE = (Status.SUCCEEDED, Status.DEGRADED)

    run = models.ForeignKey(PipelineRun, on_delete=models.CASCADE, related_name="stages")
    name = models.CharField(max_length=40)
    position = models.PositiveSmallIntegerField(default=0)
    attempt = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    seconds = models.FloatField(default=0)
    counts = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid that ran this attempt")

    class Meta:
        ordering = ["run", "position", "attempt"]
        constraints = [
            models.UniqueConstraint(fields=["run", "name", "attempt"], name="pipeline_stage_attempt_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.name} #{self.attempt} ({self.status})"


class RetrainTrigger(models.Model):
    """Every request for a pipeline run or retrain, with its reason and what became of it."""

    class Outcome(models.TextChoices):
        QUEUED = "queued", "Queued a new run"
        DEDUPLICATED = "deduplicated", "Joined the active run of the same scope"
        SUPPRESSED = "suppressed", "Suppressed (automatic retraining is off)"

    trigger = models.CharField(max_length=16, choices=PipelineRun.Trigger.choices, db_index=True)
    reason = models.TextField(blank=True)
    requested_by = models.CharField(max_length=150, blank=True)
    scope = models.CharField(max_length=80)
    tickers = models.JSONField(default=list, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    deduplicated = models.BooleanField(default=False)
    pipeline_run = models.ForeignKey(
        PipelineRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="triggers"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.trigger} trigger {self.id} ({self.outcome})"


class OrchestratorLock(models.Model):
    """A named row locked with SELECT ... FOR UPDATE to serialize decisions across workers and
    machines (taking a pipeline slot). On SQLite every write transaction is IMMEDIATE, which
    serializes them the same way."""

    name = models.CharField(max_length=50, unique=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.name

