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
    cpu_seconds = models.FloatField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    celery_task_id = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"training run {self.id} ({self.status})"

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None
