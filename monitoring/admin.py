from django.contrib import admin

from monitoring.models import Alert, CostRecord, DriftReport, PerformanceRecord


@admin.register(CostRecord)
class CostRecordAdmin(admin.ModelAdmin):
    list_display = ("day", "category", "source", "detail", "units", "unit", "bytes", "cost_usd", "created_at")
    list_filter = ("category", "source", "day")
    search_fields = ("source", "detail")
    date_hierarchy = "day"
    readonly_fields = [f.name for f in CostRecord._meta.fields]
    show_full_result_count = False  # one row per API call: counting a year of them on every page is slow

    def has_add_permission(self, request):  # cost records are written by the pipeline, never by hand
        return False


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ("kind", "key", "severity", "count", "first_seen", "last_seen", "acknowledged", "resolved")
    list_filter = ("kind", "severity", "acknowledged", "resolved")
    search_fields = ("key", "message")
    readonly_fields = [f.name for f in Alert._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(DriftReport)
class DriftReportAdmin(admin.ModelAdmin):
    list_display = ("model_version", "window_start", "window_end", "drift_detected", "drift_share", "created_at")
    list_filter = ("drift_detected",)
    readonly_fields = [f.name for f in DriftReport._meta.fields]


@admin.register(PerformanceRecord)
class PerformanceRecordAdmin(admin.ModelAdmin):
    list_display = ("model_version", "day", "window_days", "samples", "accuracy", "f1", "mae", "ic", "rank_ic")
    list_filter = ("window_days",)
    date_hierarchy = "day"
    readonly_fields = [f.name for f in PerformanceRecord._meta.fields]
