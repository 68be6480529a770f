"""Served and batch predictions."""

from __future__ import annotations

from django.db import models


class PredictionLog(models.Model):
    """Every prediction served by the API, for monitoring (written off the request path)."""

    model_version = models.ForeignKey(
        "registry.ModelVersion", on_delete=models.SET_NULL, null=True, related_name="prediction_logs"
    )
    model_name = models.CharField(max_length=100)
    ticker = models.CharField(max_length=16, blank=True, db_index=True)
    feature_date = models.DateField(null=True, blank=True, help_text="Date of the features used, when known")
    input_hash = models.CharField(max_length=64)
    prediction = models.FloatField()
    expected_return = models.FloatField(null=True)
    confidence = models.FloatField(null=True)
    latency_ms = models.FloatField()
    cached = models.BooleanField(default=False)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.model_name} {self.ticker or self.input_hash[:8]} -> {self.prediction:.4f}"


class DailyPrediction(models.Model):
    """The daily batch prediction of the whole universe, and the recommendation drawn from it."""

    class Recommendation(models.TextChoices):
        BUY = "BUY", "Buy"
        HOLD = "HOLD", "Hold"
        SELL = "SELL", "Sell"

    date = models.DateField(help_text="Date of the features (prediction made after that close)")
    ticker = models.ForeignKey("features.Ticker", on_delete=models.CASCADE, related_name="daily_predictions")
    model_version = models.ForeignKey(
        "registry.ModelVersion", on_delete=models.PROTECT, related_name="daily_predictions"
    )
    horizon_days = models.PositiveIntegerField()
    expected_return = models.FloatField()
    prob_up = models.FloatField()
    confidence = models.FloatField()
    predicted_price = models.FloatField()
    recommendation = models.CharField(max_length=4, choices=Recommendation.choices)
    rank = models.PositiveIntegerField(help_text="1 = highest expected return that day")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["date", "rank"]
        constraints = [
            models.UniqueConstraint(fields=["date", "ticker", "model_version"], name="uniq_daily_prediction")
        ]
        indexes = [models.Index(fields=["date", "model_version"])]

    def __str__(self) -> str:
        return f"{self.date} {self.ticker_id} {self.recommendation} {self.expected_return:+.4f}"
