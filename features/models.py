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
        SOCIAL = "social", "Social posts"

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


class BenchmarkReturn(models.Model):
    """Daily total return of a market benchmark (SPY): the market for beta and relative returns."""

    symbol = models.CharField(max_length=16, default="SPY")
    date = models.DateField()
    ret = models.FloatField(help_text="Simple daily total return")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["symbol", "date"], name="uniq_benchmark_return")]
        ordering = ["symbol", "date"]

    def __str__(self) -> str:
        return f"{self.symbol} {self.date} {self.ret:+.4f}"


class NewsItem(models.Model):
    ticker = models.ForeignKey(Ticker, on_delete=models.CASCADE, related_name="news")
    published_at = models.DateTimeField()
    headline = models.TextField()
    source = models.CharField(max_length=200, blank=True)
    url = models.URLField(max_length=1000, blank=True)
    provider = models.CharField(max_length=50, default="file")
    sentiment = models.FloatField(null=True, blank=True, help_text="Score in [-1, 1]")
    content_hash = models.CharField(max_length=64, help_text="sha256 of headline, for de-duplication")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["ticker", "published_at", "content_hash"], name="uniq_news_ticker_time_headline"
            )
        ]
        indexes = [models.Index(fields=["ticker", "published_at"])]
        ordering = ["-published_at"]

    def __str__(self) -> str:
        return f"{self.ticker_id} {self.published_at:%Y-%m-%d}: {self.headline[:60]}"


class SocialPost(models.Model):
    """One social-media post about one ticker (a post that cash-tags two tickers is two rows)."""

    class Label(models.TextChoices):
        BULLISH = "bullish", "Bullish"
        BEARISH = "bearish", "Bearish"
        NONE = "", "None"

    ticker = models.ForeignKey(Ticker, on_delete=models.CASCADE, related_name="social_posts")
    source = models.CharField(max_length=50, help_text="Where it was posted: twitter, stocktwits, ...")
    post_key = models.CharField(max_length=80, help_text="The source's post id, else 'h:' + sha256 of its content")
    posted_at = models.DateTimeField()
    text = models.TextField()
    author = models.CharField(max_length=32, blank=True,
                              help_text="Keyed hash of the source's author id (no handle is stored)")
    author_label = models.CharField(max_length=8, choices=Label.choices, blank=True, default="",
                                    help_text="The author's own Bullish/Bearish tag, where the source has one")
    sentiment = models.FloatField(help_text="Score in [-1, 1] (features.social.score_post)")
    provider = models.CharField(max_length=50, default="file", help_text="'file' or the provider it came from")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "post_key", "ticker"], name="uniq_social_source_post_ticker")
        ]
        indexes = [models.Index(fields=["ticker", "posted_at"])]
        ordering = ["-posted_at"]

    def __str__(self) -> str:
        return f"{self.ticker_id} {self.source} {self.posted_at:%Y-%m-%d %H:%M}: {self.text[:60]}"


class FeatureSet(models.Model):
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class FeatureSetVersion(models.Model):
    """An immutable, ordered feature list with parameters; any change makes a new version."""

    feature_set = models.ForeignKey(FeatureSet, on_delete=models.PROTECT, related_name="versions")
    version = models.CharField(max_length=20, help_text="Semantic version major.minor.patch")
    features = models.JSONField(help_text="Ordered list of {name, group, params}")
    params = models.JSONField(default=dict, blank=True, help_text="Engine parameters (windows, options)")
    content_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["feature_set", "version"], name="uniq_featureset_version"),
            models.UniqueConstraint(fields=["feature_set", "content_hash"], name="uniq_featureset_hash"),
        ]
        ordering = ["feature_set", "-created_at"]

    def __str__(self) -> str:
        return f"{self.feature_set.name}@{self.version}"

    @property
    def feature_names(self) -> list[str]:
        return [f["name"] for f in self.features]


class FeatureMaterialization(models.Model):
    class Mode(models.TextChoices):
        FULL = "full", "Full rebuild"
        INCREMENTAL = "incremental", "Incremental"

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    version = models.ForeignKey(FeatureSetVersion, on_delete=models.PROTECT, related_name="materializations")
    mode = models.CharField(max_length=16, choices=Mode.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    start_date = models.DateField(null=True, blank=True)
    end_date = models.DateField(null=True, blank=True)
    tickers = models.PositiveIntegerField(default=0)
    ticker_scope = models.TextField(blank=True, help_text="Comma-separated tickers, empty for all")
    storage_path = models.CharField(max_length=500, blank=True, help_text="Relative to ML_FEATURES_PATH")
    rows = models.PositiveBigIntegerField(default=0)
    files_written = models.PositiveIntegerField(default=0)
    checksum = models.CharField(max_length=64, blank=True, help_text="sha256 over the files written")
    duration_seconds = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.version} {self.mode} {self.start_date}..{self.end_date} ({self.status})"


class SharedCounter(models.Model):
    """A counter every worker shares when there is no Redis: provider request slots and daily
    quotas, and the day's API spend (``features.services.limits``)."""

    key = models.CharField(max_length=200, unique=True)
    value = models.FloatField(default=0.0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.key} = {self.value}"
