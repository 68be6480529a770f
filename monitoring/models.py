"""Monitoring tables: costs (more follow with alerts, drift and performance)."""

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
