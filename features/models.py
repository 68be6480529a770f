"""Market data (the feature store's raw layer) and its ingestion log."""

from __future__ import annotations

from django.db import models


class Exchange(models.TextChoices):
    NYSE = "NYSE", "NYSE"
    NASDAQ = "NASDAQ", "NASDAQ"
    AMEX = "AMEX", "AMEX (NYSE American)"
    OTHER = "OTHER", "Other"
    UNKNOWN = "", "Unknown"


class Ticker(models.Model):
    symbol = models.CharField(max_length=16, unique=True)
    name = models.CharField(max_length=200, blank=True)
    exchange = models.CharField(max_length=8, choices=Exchange.choices, blank=True, default="")
    sector = models.CharField(max_length=100, blank=True)
    is_etf = models.BooleanField(default=False)
    # Delisted tickers are marked inactive, never deleted: their history stays for training.
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["symbol"]
        indexes = [models.Index(fields=["active", "exchange"])]

    def __str__(self) -> str:
        return self.symbol


class PriceBar(models.Model):
    """One daily bar. OHLC and volume are split-adjusted; adj_close is split- and dividend-adjusted."""

    ticker = models.ForeignKey(Ticker, on_delete=models.CASCADE, related_name="bars")
    date = models.DateField()
    open = models.FloatField()
    high = models.FloatField()
    low = models.FloatField()
    close = models.FloatField()
    adj_close = models.FloatField()
    volume = models.BigIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["ticker", "date"], name="uniq_pricebar_ticker_date")]
        indexes = [models.Index(fields=["date"])]
        ordering = ["ticker", "date"]

    def __str__(self) -> str:
        return f"{self.ticker_id}@{self.date}"


class CorporateAction(models.Model):
    class Kind(models.TextChoices):
        SPLIT = "split", "Split"
        DIVIDEND = "dividend", "Cash dividend"

    ticker = models.ForeignKey(Ticker, on_delete=models.CASCADE, related_name="corporate_actions")
    date = models.DateField(help_text="Ex-date")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    value = models.FloatField(help_text="Split ratio (new shares per old share) or dividend per share")
    source = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["ticker", "date", "kind"], name="uniq_corporate_action")
        ]
        ordering = ["ticker", "date"]

    def __str__(self) -> str:
        return f"{self.ticker_id} {self.kind} {self.value} on {self.date}"


class FundamentalSnapshot(models.Model):
    """Fundamentals as they were known on ``as_of``; features join them point-in-time."""

    ticker = models.ForeignKey(Ticker, on_delete=models.CASCADE, related_name="fundamentals")
    as_of = models.DateField(help_text="Date the values became known")
    price = models.FloatField(null=True, blank=True)
    pe_ratio = models.FloatField(null=True, blank=True)
    eps = models.FloatField(null=True, blank=True)
    market_cap = models.FloatField(null=True, blank=True, help_text="USD")
    dividend_yield = models.FloatField(null=True, blank=True, help_text="Fraction, 0.02 = 2%")
    sector = models.CharField(max_length=100, blank=True)
    source = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["ticker", "as_of"], name="uniq_fundamental_ticker_asof")
        ]
        indexes = [models.Index(fields=["as_of"])]
        ordering = ["ticker", "as_of"]

    def __str__(self) -> str:
        return f"{self.ticker_id} fundamentals as of {self.as_of}"


class IngestionRun(models.Model):
    class Kind(models.TextChoices):
        PRICES = "prices", "Prices"
        FUNDAMENTALS = "fundamentals", "Fundamentals"
        NEWS = "news", "News"
        UNIVERSE = "universe", "Universe"

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    source = models.CharField(max_length=100, help_text="Provider or 'file'")
    file = models.CharField(max_length=500, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    rows_read = models.PositiveBigIntegerField(default=0)
    rows_loaded = models.PositiveBigIntegerField(default=0, help_text="New rows inserted")
    rows_updated = models.PositiveBigIntegerField(default=0)
    rows_unchanged = models.PositiveBigIntegerField(default=0)
    rows_rejected = models.PositiveBigIntegerField(default=0)
    rejected_by_reason = models.JSONField(default=dict, blank=True)
    rejected_rows = models.JSONField(
        default=list, blank=True, help_text="Rejected rows with their reasons (first 1,000)"
    )
    tickers = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.kind} from {self.file or self.source} ({self.status})"
