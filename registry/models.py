"""The model registry: registered models, semantic versions, lineage, lifecycle history."""

from __future__ import annotations

from django.db import models


class RegisteredModel(models.Model):
    name = models.CharField(max_length=100, unique=True, help_text="e.g. lstm_predictor")
    model_type = models.CharField(max_length=50, help_text="neural_network, tree_ensemble, time_series, ensemble")
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        STAGING = "staging", "Staging"
        ACTIVE = "active", "Active"
        DEPRECATED = "deprecated", "Deprecated"
        ARCHIVED = "archived", "Archived"

    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="versions")
    version = models.CharField(max_length=20, help_text="major.minor.patch")
    major = models.PositiveIntegerField()
    minor = models.PositiveIntegerField()
    patch = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.STAGING, db_index=True)
    status_reason = models.TextField(blank=True, help_text="Why the gate kept or promoted it")
    model_type = models.CharField(max_length=50, blank=True, help_text="The learner's type when it was trained")

    # metadata
    target = models.CharField(max_length=50, help_text="e.g. fwd_ret_5 or fwd_dir_5")
    horizon_days = models.PositiveIntegerField(default=5)
    feature_set_version = models.ForeignKey(
        "features.FeatureSetVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="model_versions"
    )
    feature_columns = models.JSONField(default=list, blank=True)
    hyperparameters = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="Walk-forward out-of-sample metrics")
    baselines = models.JSONField(default=dict, blank=True)
    data_sources = models.JSONField(default=list, blank=True)
    train_start = models.DateField(null=True, blank=True)
    train_end = models.DateField(null=True, blank=True)
    evaluation_start = models.DateField(null=True, blank=True)
    evaluation_end = models.DateField(null=True, blank=True)
    tickers = models.PositiveIntegerField(default=0)
    training_data_hash = models.CharField(max_length=64, blank=True)
    git_commit = models.CharField(max_length=40, blank=True)
    library_versions = models.JSONField(default=dict, blank=True)
    training_seconds = models.FloatField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    drift_reference = models.JSONField(default=dict, blank=True,
                                       help_text="Training feature profile: decile bins and percentiles (features.profile)")
    evaluation = models.JSONField(
        default=dict, blank=True, help_text="Walk-forward settings, folds with their metrics, out-of-sample window"
    )
    gate = models.JSONField(default=dict, blank=True, help_text="The last promotion gate decision, with its numbers")

    # artifact: path relative to ML_MODELS_PATH, derived from ids, never from user input
    artifact_path = models.CharField(max_length=300, blank=True)
    artifact_sha256 = models.CharField(max_length=64, blank=True)
    artifact_bytes = models.PositiveBigIntegerField(default=0)
    # out-of-sample (walk-forward) predictions with their labels, for the gate and the ensemble
    oof_path = models.CharField(max_length=300, blank=True)
    oof_sha256 = models.CharField(max_length=64, blank=True)
    oof_bytes = models.PositiveBigIntegerField(default=0)

    # lineage
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    training_run = models.ForeignKey(
        "training.TrainingRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="model_versions"
    )
    members = models.ManyToManyField("self", symmetrical=False, blank=True, related_name="ensembles")
    previous_active = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The version that was active when this one was promoted (what rollback returns to)",
    )

    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "version"], name="uniq_model_version"),
            # at most one active version per model, enforced by the database
            models.UniqueConstraint(
                fields=["model"], condition=models.Q(status="active"), name="one_active_version_per_model"
            ),
        ]
        ordering = ["model", "-major", "-minor", "-patch"]

    def __str__(self) -> str:
        return f"{self.model.name}@{self.version}"


class DeploymentEvent(models.Model):
    """Every lifecycle change: what changed, when, by whom or what, and why."""

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="events")
    action = models.CharField(max_length=30, help_text="register, promote, gate_rejected, deprecate, archive, rollback")
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16, blank=True)
    actor = models.CharField(max_length=150, help_text="user name, or pipeline/task name")
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.version} {self.action} by {self.actor}"
