"""Served and batch predictions, and their books and records (the hash-chained compliance records)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from inference.records_chain import GENESIS_HASH


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
    requester = models.CharField(
        max_length=40, blank=True, db_index=True,
        help_text="The API user's pseudonym (RequesterPseudonym), never the user name; empty when not a user",
    )
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


# --------------------------------------------------------------------------------------------------
# books and records (inference.compliance; hash logic in inference.records_chain)


class AppendOnlyQuerySet(models.QuerySet):
    """Compliance records are never changed or deleted through the ORM; only the retention task
    removes whole prefixes of the chain (``inference.compliance.prune_records``)."""

    def update(self, **kwargs):
        raise TypeError("compliance records are append-only")

    def delete(self):
        raise TypeError("compliance records are append-only (retention: inference.compliance.prune_records)")


class ComplianceRecord(models.Model):
    """One served prediction of a ticker, or one recommendation of the daily batch: append-only and
    hash-chained (``record_hash`` = sha256 of the previous record's hash and this row's fields)."""

    class Kind(models.TextChoices):
        PREDICTION = "prediction", "Served prediction"
        RECOMMENDATION = "recommendation", "Recommendation"

    seq = models.BigIntegerField(primary_key=True, help_text="Position in the chain: 1, 2, 3...")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    created_at = models.DateTimeField(db_index=True, help_text="When the prediction was made (UTC)")
    model_name = models.CharField(max_length=100)
    model_version = models.CharField(max_length=40)
    model_version_ref = models.BigIntegerField(null=True, help_text="registry ModelVersion id (not a foreign key)")
    ticker = models.CharField(max_length=16, db_index=True)
    input_hash = models.CharField(max_length=64)
    output = models.TextField(help_text="What was served, canonical JSON (hashed as stored)")
    requester = models.CharField(
        max_length=40, db_index=True,
        help_text="The API user's pseudonym (RequesterPseudonym), or system:<task>",
    )
    prev_hash = models.CharField(max_length=64)
    record_hash = models.CharField(max_length=64)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["seq"]

    def save(self, *args, **kwargs):
        raise TypeError("compliance records are written by inference.compliance.append_records only")

    def delete(self, *args, **kwargs):
        raise TypeError("compliance records are append-only")

    def __str__(self) -> str:
        return f"#{self.seq} {self.kind} {self.model_name}@{self.model_version} {self.ticker}"


class ComplianceChainHead(models.Model):
    """The chain's end (one row, id 1): appends lock it, so records are numbered and chained in order."""

    last_seq = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default=GENESIS_HASH)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"chain head #{self.last_seq} {self.last_hash[:12]}"


class ComplianceCheckpoint(models.Model):
    """Written by the retention task before it deletes records ``..through_seq``: the last deleted
    record's hash, where verification of the remaining chain starts."""

    through_seq = models.BigIntegerField(unique=True)
    through_hash = models.CharField(max_length=64)
    through_created_at = models.DateTimeField(null=True)
    deleted = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-through_seq"]

    def __str__(self) -> str:
        return f"checkpoint #{self.through_seq} {self.through_hash[:12]}"


class RequesterPseudonym(models.Model):
    """The random pseudonym logs and compliance records carry instead of the API user. ``erase_user``
    deletes this row: the records stay (and verify), and no longer lead to anyone."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    pseudonym = models.CharField(max_length=40, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.pseudonym
