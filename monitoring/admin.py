from django.contrib import admin

from monitoring.models import CostRecord


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
