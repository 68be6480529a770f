"""Monitoring tables: costs, alerts, drift reports and realized performance."""

from __future__ import annotations

from django.db import models


class CostRecord(models.Model):
    """One metered cost: an API call batch, compute seconds of a run, storage."""

    class Category(models.TextChoices):
        COMPUTE = "compute", "Compute"
        DATA_API = "data_api", "Data API"
        STORAGE = "storage", "Storage"

    day = models.DateField(db_index=True)
    category = models.CharField(max_length=16, choices=Category.choices)
    source = models.CharField(max_length=100, help_text="Provider, task or run, e.g. alphavantage")
    detail = models.CharField(max_length=200, blank=True, help_text="Endpoint, stage or ticker")
    units = models.FloatField(default=0, help_text="Calls, CPU seconds, GB-days...")
    unit = models.CharField(max_length=20, default="call")
    bytes = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["day", "category"])]

    def __str__(self) -> str:
        return f"{self.day} {self.category} {self.source}: ${self.cost_usd}"


class Alert(models.Model):
    """One alert per condition: repeats raise ``count`` and ``last_seen`` instead of new rows."""

    class Severity(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    kind = models.CharField(max_length=40, db_index=True, help_text="high_latency, low_accuracy, data_drift...")
    key = models.CharField(max_length=200, help_text="What it is about, e.g. a model name or endpoint")
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.WARNING)
    message = models.TextField()
    details = models.JSONField(default=dict, blank=True)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    count = models.PositiveIntegerField(default=1)
    acknowledged = models.BooleanField(default=False)
    acknowledged_by = models.CharField(max_length=150, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    resolved = models.BooleanField(default=False, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    last_notified_at = models.DateTimeField(null=True, blank=True)
    notifications_sent = models.PositiveIntegerField(default=0)
    notified_severity = models.CharField(
        max_length=10, blank=True, help_text="Severity of the last notification (a rise notifies again)"
    )

    class Meta:
        ordering = ["resolved", "-last_seen"]
        constraints = [
            # the same open condition can exist only once: deduplication is enforced by the database
            models.UniqueConstraint(
                fields=["kind", "key"], condition=models.Q(resolved=False), name="one_open_alert_per_condition"
            )
        ]

    def __str__(self) -> str:
        return f"[{self.severity}] {self.kind} {self.key}: {self.message[:60]}"


class DriftReport(models.Model):
    model_version = models.ForeignKey(
        "registry.ModelVersion", on_delete=models.CASCADE, related_name="drift_reports"
    )
    window_start = models.DateField()
    window_end = models.DateField()
    drift_detected = models.BooleanField()
    drift_share = models.FloatField()
    threshold = models.FloatField()
    features = models.JSONField(help_text="feature -> {psi, ks_statistic, drifted, ...}")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"drift {self.model_version} {self.window_start}..{self.window_end}: {self.drift_share:.2f}"


class PerformanceRecord(models.Model):
    """Realized out-of-sample quality of one model version, per day, over a rolling window."""

    model_version = models.ForeignKey(
        "registry.ModelVersion", on_delete=models.CASCADE, related_name="performance_records"
    )
    day = models.DateField()
    window_days = models.PositiveIntegerField()
    samples = models.PositiveIntegerField()
    accuracy = models.FloatField(null=True)
    precision = models.FloatField(null=True)
    recall = models.FloatField(null=True)
    f1 = models.FloatField(null=True)
    mae = models.FloatField(null=True)
    ic = models.FloatField(null=True)
    rank_ic = models.FloatField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-day"]
        constraints = [
            models.UniqueConstraint(fields=["model_version", "day", "window_days"], name="uniq_performance_record")
        ]

    def __str__(self) -> str:
        return f"{self.model_version} {self.day} acc={self.accuracy}"
