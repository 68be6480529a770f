"""Training runs and pipeline runs in the admin: read-only, with their stages, log, error, metrics and cost."""

from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join

from training.models import PipelineRun, PipelineStage, RetrainTrigger, TrainingRun
from training.orchestrator.stages import cancel_run
from training.orchestrator.triggers import request_pipeline_run


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("id", "status", "trigger", "requested_by", "models", "created_at", "duration", "cpu_seconds",
                    "cost_usd", "versions")
    list_filter = ("status", "trigger")
    search_fields = ("requested_by", "error", "log")
    fields = ("status", "trigger", "requested_by", "model_names", "tickers", "feature_set_version", "celery_task_id",
              "created_at", "started_at", "heartbeat_at", "finished_at", "duration", "cpu_seconds", "cost_usd", "stages_table",
              "versions", "metrics", "options", "parts_pending", "error", "log")
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="models")
    def models(self, obj):
        return ", ".join(obj.model_names)

    @admin.display(description="duration")
    def duration(self, obj):
        seconds = obj.duration_seconds
        return "-" if seconds is None else f"{seconds:.1f}s"

    @admin.display(description="model versions")
    def versions(self, obj):
        found = [f"{v.model.name}@{v.version} ({v.status})" for v in obj.model_versions.select_related("model")]
        return ", ".join(found) or "-"

    @admin.display(description="stages")
    def stages_table(self, obj):
        if not obj.stages:
            return "-"
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((s.get("name"), s.get("status"), f"{s.get('seconds', 0):.1f}s", f"{s.get('cpu_seconds', 0):.1f}s",
              ", ".join(f"{k}={v}" for k, v in (s.get("counts") or {}).items()), s.get("error", ""))
             for s in obj.stages),
        )
        return format_html("<table><tr><th>stage</th><th>status</th><th>wall</th><th>CPU</th><th>counts</th>"
                           "<th>error</th></tr>{}</table>", rows)


# --------------------------------------------------------------------------------------------------
# The orchestrator: pipeline runs (read-only, with their stage attempts), triggers. Actions cancel a
# run or request a new one for the same tickers (trigger "admin"). The schedules are
# django-celery-beat's periodic tasks (Periodic tasks in the admin), seeded by seed_schedules.


class PipelineStageInline(admin.TabularInline):
    model = PipelineStage
    extra = 0
    can_delete = False
    fields = ("name", "attempt", "status", "started_at", "finished_at", "seconds", "counts_text", "error", "worker")
    readonly_fields = fields
    ordering = ("position", "attempt")

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="counts")
    def counts_text(self, obj):
        return ", ".join(f"{k}={v}" for k, v in (obj.counts or {}).items()) or "-"


class RetrainTriggerInline(admin.TabularInline):
    model = RetrainTrigger
    extra = 0
    can_delete = False
    fields = ("created_at", "trigger", "requested_by", "outcome", "reason")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(PipelineRun)
class PipelineRunAdmin(admin.ModelAdmin):
    list_display = ("id", "status", "trigger", "requested_by", "scope_text", "current_stage", "attempts", "created_at",
                    "duration", "cost_usd", "training_run")
    list_filter = ("status", "trigger", "mode")
    search_fields = ("requested_by", "reason", "error", "scope")
    fields = ("status", "status_reason", "trigger", "reason", "requested_by", "scope", "tickers", "mode", "options",
              "attempts", "generation", "current_stage", "training_run", "celery_task_id", "worker_host", "worker_pid",
              "heartbeat_at", "next_attempt_at", "running_at_start", "created_at", "started_at", "finished_at",
              "duration", "cost_usd", "error")
    readonly_fields = fields
    inlines = [PipelineStageInline, RetrainTriggerInline]
    actions = ["cancel_runs", "run_again"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="tickers")
    def scope_text(self, obj):
        if not obj.tickers:
            return "universe"
        return ",".join(obj.tickers[:5]) + (f",... ({len(obj.tickers)})" if len(obj.tickers) > 5 else "")

    @admin.display(description="duration")
    def duration(self, obj):
        seconds = obj.duration_seconds
        return "-" if seconds is None else f"{seconds:.1f}s"

    @admin.action(description="Cancel the selected runs (running ones stop at their next stage)")
    def cancel_runs(self, request, queryset):
        cancelled = 0
        for run in queryset.filter(status__in=PipelineRun.ACTIVE):
            cancel_run(run_id=run.pk, actor=request.user.get_username())
            cancelled += 1
        self.message_user(request, f"{cancelled} run(s) cancelled", messages.SUCCESS)

    @admin.action(description="Run the pipeline again for the selected runs' tickers")
    def run_again(self, request, queryset):
        for run in queryset:
            new = request_pipeline_run(
                trigger=PipelineRun.Trigger.ADMIN, requested_by=request.user.get_username(),
                tickers=list(run.tickers) or None, reason=f"admin: again after pipeline run {run.pk}",
            )
            what = "joined the active" if getattr(new, "deduplicated", False) else "queued"
            self.message_user(request, f"{what} pipeline run {new.pk} ({new.status})", messages.SUCCESS)


@admin.register(RetrainTrigger)
class RetrainTriggerAdmin(admin.ModelAdmin):
    list_display = ("id", "created_at", "trigger", "requested_by", "outcome", "deduplicated", "pipeline_run", "reason")
    list_filter = ("trigger", "outcome", "deduplicated")
    search_fields = ("reason", "requested_by")
    readonly_fields = ("trigger", "reason", "requested_by", "scope", "tickers", "outcome", "deduplicated",
                       "pipeline_run", "created_at")
    fields = readonly_fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
