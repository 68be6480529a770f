"""Admin for the model lifecycle: versions with metrics and lineage, deployment history, and the
promote / deprecate / archive / rollback actions (each recorded with the signed-in user as actor)."""

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from registry import services
from registry.models import DeploymentEvent, ModelVersion, RegisteredModel
from registry.selectors import active_version, feature_importance, version_label

SHOWN_METRICS = ("rank_ic", "ic", "sharpe", "accuracy", "hit_rate")


def _link(obj, label=None):
    if obj is None:
        return "-"
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, label or str(obj))


def _num(value):
    return "n/a" if value is None else f"{value:.4g}"


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    list_display = ("name", "model_type", "active", "version_count", "created_at")
    search_fields = ("name",)
    readonly_fields = ("created_at",)

    @admin.display(description="active version")
    def active(self, obj):
        version = active_version(model_name=obj.name)
        return _link(version, version.version) if version else "-"

    @admin.display(description="versions")
    def version_count(self, obj):
        return obj.versions.count()


class DeploymentEventInline(admin.TabularInline):
    model = DeploymentEvent
    extra = 0
    can_delete = False
    fields = ("created_at", "action", "from_status", "to_status", "actor", "reason")
    readonly_fields = fields
    ordering = ("-created_at", "-id")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("label", "status", *[f"m_{k}" for k in SHOWN_METRICS], "evaluation_window", "run", "created_at",
                    "activated_at")
    list_filter = ("status", "model")
    list_select_related = ("model", "training_run")
    search_fields = ("model__name", "version", "status_reason")
    ordering = ("model__name", "-major", "-minor", "-patch")
    inlines = [DeploymentEventInline]
    actions = ["promote_versions", "force_promote_versions", "deprecate_versions", "archive_versions",
               "rollback_models"]
    fieldsets = (
        (None, {"fields": ("model", "version", "status", "status_reason", "gate_summary")}),
        ("Metrics (walk-forward out of sample)", {"fields": ("metrics_table", "folds_table", "importance_table")}),
        ("Lineage", {"fields": ("parent_link", "members_list", "run_link", "previous_active_link")}),
        ("Metadata", {"fields": (
            "model_type", "target", "horizon_days", "feature_set_version", "feature_columns", "hyperparameters",
            "data_sources", "train_start", "train_end", "evaluation_start", "evaluation_end", "tickers",
            "training_data_hash", "git_commit", "library_versions", "training_seconds", "cost_usd",
        )}),
        ("Artifact", {"fields": ("artifact_path", "artifact_sha256", "artifact_bytes", "oof_path", "oof_sha256",
                                 "oof_bytes")}),
        ("Timestamps", {"fields": ("created_at", "activated_at")}),
    )

    def get_readonly_fields(self, request, obj=None):
        # Versions are records: everything changes through the lifecycle actions only.
        return [f for fs in self.fieldsets for f in fs[1]["fields"]]

    def has_add_permission(self, request):
        return False

    @admin.display(description="version", ordering="version")
    def label(self, obj):
        return version_label(obj)

    @admin.display(description="evaluation window")
    def evaluation_window(self, obj):
        return f"{obj.evaluation_start}..{obj.evaluation_end}" if obj.evaluation_start else "-"

    @admin.display(description="training run")
    def run(self, obj):
        return _link(obj.training_run, f"run {obj.training_run_id}") if obj.training_run_id else "-"

    run_link = run

    @admin.display(description="parent")
    def parent_link(self, obj):
        return _link(obj.parent)

    @admin.display(description="previously active")
    def previous_active_link(self, obj):
        return _link(obj.previous_active)

    @admin.display(description="ensemble members")
    def members_list(self, obj):
        members = list(obj.members.select_related("model"))
        return format_html_join(", ", "{}", ((_link(m),) for m in members)) if members else "-"

    @admin.display(description="gate")
    def gate_summary(self, obj):
        if not obj.gate:
            return "-"
        g = obj.gate
        return format_html(
            "{} | metric {}: new {} vs active {} ({}) | score {} ({}) vs threshold {} | window {}",
            "forced" if g.get("forced") else ("passed" if g.get("passed") else "rejected"), g.get("metric"),
            _num(g.get("new_value")), _num(g.get("active_value")), g.get("active_version") or "none",
            _num(g.get("score")), g.get("score_kind"), g.get("threshold"), g.get("window"),
        )

    @admin.display(description="metrics vs baselines")
    def metrics_table(self, obj):
        names = list(obj.baselines)
        head = format_html_join("", "<th>{}</th>", ((n,) for n in ["metric", "model", *names]))
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td>{}</tr>",
            ((k, _num(v), format_html_join("", "<td>{}</td>", ((_num(obj.baselines[b].get(k)),) for b in names)))
             for k, v in obj.metrics.items()),
        )
        return format_html("<table><tr>{}</tr>{}</table>", head, rows)

    @admin.display(description="folds")
    def folds_table(self, obj):
        folds = obj.evaluation.get("folds", [])
        if not folds:
            return "-"
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}..{}</td><td>{}</td><td>{}..{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((f["fold"], f["train_start"], f["train_end"], f["gap_days"], f["test_start"], f["test_end"],
              f.get("n_test_rows", ""), _num(f.get("metrics", {}).get("rank_ic")),
              _num(f.get("metrics", {}).get("sharpe"))) for f in folds),
        )
        return format_html(
            "<table><tr><th>fold</th><th>train</th><th>gap</th><th>test</th><th>rows</th><th>rank IC</th>"
            "<th>Sharpe</th></tr>{}</table>", rows,
        )

    @admin.display(description="feature importance")
    def importance_table(self, obj):
        rows = feature_importance(version=obj)
        if not rows:
            return "-"
        body = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((r["feature"], f"{r['gain_share']:.1%}", _num(r["permutation"])) for r in rows),
        )
        return format_html("<table><tr><th>feature</th><th>share of gain</th><th>permutation "
                           "(validation rank IC lost)</th></tr>{}</table>", body)

    def _metric(self, obj, key):
        return _num(obj.metrics.get(key))

    # ---- lifecycle actions (thin: the services do the work and the history) ----------------------

    def _each(self, request, queryset, verb, call):
        for version in queryset.select_related("model"):
            try:
                result = call(version)
            except (services.RegistryError, services.ArtifactIntegrityError) as exc:
                self.message_user(request, f"{version_label(version)}: {exc}", messages.ERROR)
                continue
            reason = getattr(result, "reason", None)
            passed = getattr(result, "passed", True)
            self.message_user(request, reason or f"{version_label(version)} {verb}",
                              messages.SUCCESS if passed else messages.WARNING)

    @admin.action(description="Promote through the gate", permissions=["change"])
    def promote_versions(self, request, queryset):
        actor = f"{request.user.get_username()} (admin)"
        self._each(request, queryset, "promoted",
                   lambda v: services.promote(version=v, actor=actor, reason="promoted from the admin"))

    @admin.action(description="Promote, skipping the gate (forced)", permissions=["change"])
    def force_promote_versions(self, request, queryset):
        actor = f"{request.user.get_username()} (admin)"
        self._each(request, queryset, "promoted (forced)",
                   lambda v: services.promote(version=v, actor=actor, reason="forced from the admin", force=True))

    @admin.action(description="Deprecate", permissions=["change"])
    def deprecate_versions(self, request, queryset):
        actor = f"{request.user.get_username()} (admin)"
        self._each(request, queryset, "deprecated",
                   lambda v: services.deprecate(version=v, actor=actor, reason="deprecated from the admin"))

    @admin.action(description="Archive", permissions=["change"])
    def archive_versions(self, request, queryset):
        actor = f"{request.user.get_username()} (admin)"
        self._each(request, queryset, "archived",
                   lambda v: services.archive(version=v, actor=actor, reason="archived from the admin"))

    @admin.action(description="Roll back these versions' models to their previous active version",
                  permissions=["change"])
    def rollback_models(self, request, queryset):
        actor = f"{request.user.get_username()} (admin)"
        for name in sorted(set(queryset.values_list("model__name", flat=True))):
            try:
                target = services.rollback(model_name=name, actor=actor, reason="rolled back from the admin")
            except services.RegistryError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            self.message_user(request, f"{version_label(target)} is active again", messages.SUCCESS)


for _key in SHOWN_METRICS:
    def _make(key):
        return admin.display(description=key)(lambda self, obj: self._metric(obj, key))

    setattr(ModelVersionAdmin, f"m_{_key}", _make(_key))


@admin.register(DeploymentEvent)
class DeploymentEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "version", "action", "from_status", "to_status", "actor", "reason")
    list_filter = ("action", "version__model")
    list_select_related = ("version", "version__model")
    search_fields = ("version__model__name", "version__version", "actor", "reason")
    readonly_fields = [f.name for f in DeploymentEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
