import json

from django.contrib import admin
from django.db.models import Count
from django.utils.html import format_html, format_html_join

from features.models import (
    BenchmarkReturn,
    CorporateAction,
    FeatureMaterialization,
    FeatureSet,
    FeatureSetVersion,
    FundamentalSnapshot,
    IngestionRun,
    NewsItem,
    PriceBar,
    SocialPost,
    Ticker,
)


@admin.register(Ticker)
class TickerAdmin(admin.ModelAdmin):
    list_display = ("symbol", "name", "exchange", "sector", "is_etf", "active", "updated_at")
    list_filter = ("active", "exchange", "is_etf", "sector")
    search_fields = ("symbol", "name")


@admin.register(PriceBar)
class PriceBarAdmin(admin.ModelAdmin):
    list_display = ("ticker", "date", "open", "high", "low", "close", "adj_close", "volume")
    list_select_related = ("ticker",)
    search_fields = ("ticker__symbol",)
    date_hierarchy = "date"
    raw_id_fields = ("ticker",)
    show_full_result_count = False  # counting millions of bars on every page is slow


@admin.register(CorporateAction)
class CorporateActionAdmin(admin.ModelAdmin):
    list_display = ("ticker", "date", "kind", "value", "source")
    list_filter = ("kind",)
    search_fields = ("ticker__symbol",)
    raw_id_fields = ("ticker",)


@admin.register(FundamentalSnapshot)
class FundamentalSnapshotAdmin(admin.ModelAdmin):
    list_display = ("ticker", "as_of", "price", "pe_ratio", "eps", "market_cap", "dividend_yield", "sector")
    list_filter = ("as_of",)
    search_fields = ("ticker__symbol",)
    raw_id_fields = ("ticker",)


@admin.register(IngestionRun)
class IngestionRunAdmin(admin.ModelAdmin):
    list_display = (
        "id", "kind", "source", "file", "status", "started_at", "duration_seconds",
        "rows_read", "rows_loaded", "rows_updated", "rows_unchanged", "rows_rejected", "tickers",
    )
    list_filter = ("kind", "status", "source")
    readonly_fields = [f.name for f in IngestionRun._meta.fields]


# --- Feature store ------------------------------------------------------------------------------


class FeatureSetVersionInline(admin.TabularInline):
    model = FeatureSetVersion
    fields = ("version", "feature_count", "content_hash", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="features")
    def feature_count(self, obj):
        return len(obj.features or [])


@admin.register(FeatureSet)
class FeatureSetAdmin(admin.ModelAdmin):
    list_display = ("name", "description", "version_count", "created_at")
    search_fields = ("name",)
    inlines = [FeatureSetVersionInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_versions=Count("versions"))

    @admin.display(description="versions", ordering="_versions")
    def version_count(self, obj):
        return obj._versions


@admin.register(FeatureSetVersion)
class FeatureSetVersionAdmin(admin.ModelAdmin):
    """Versions are immutable: created by builds (``ensure_feature_set_version``), never edited here."""

    list_display = ("__str__", "feature_set", "version", "feature_count", "short_hash", "created_at")
    list_filter = ("feature_set",)
    list_select_related = ("feature_set",)
    search_fields = ("feature_set__name", "version", "content_hash")
    fields = ("feature_set", "version", "content_hash", "created_at", "features_table", "params")
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="features")
    def feature_count(self, obj):
        return len(obj.features or [])

    @admin.display(description="hash")
    def short_hash(self, obj):
        return obj.content_hash[:12]

    @admin.display(description="features (in column order)")
    def features_table(self, obj):
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td><code>{}</code></td></tr>",
            (
                (i, f.get("name", ""), f.get("group", ""), json.dumps(f.get("params", {}), sort_keys=True))
                for i, f in enumerate(obj.features or [], start=1)
            ),
        )
        return format_html(
            "<table><thead><tr><th>#</th><th>name</th><th>group</th><th>params</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            rows,
        )


@admin.register(FeatureMaterialization)
class FeatureMaterializationAdmin(admin.ModelAdmin):
    list_display = (
        "id", "version", "mode", "status", "start_date", "end_date", "tickers", "rows", "files_written",
        "duration_seconds", "created_at",
    )
    list_filter = ("status", "mode", "version__feature_set")
    list_select_related = ("version__feature_set",)
    search_fields = ("ticker_scope", "checksum", "storage_path")
    readonly_fields = [f.name for f in FeatureMaterialization._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(BenchmarkReturn)
class BenchmarkReturnAdmin(admin.ModelAdmin):
    list_display = ("symbol", "date", "ret")
    list_filter = ("symbol",)
    date_hierarchy = "date"
    search_fields = ("symbol",)


@admin.register(NewsItem)
class NewsItemAdmin(admin.ModelAdmin):
    list_display = ("ticker", "published_at", "short_headline", "sentiment", "provider", "source")
    list_filter = ("provider",)
    list_select_related = ("ticker",)
    search_fields = ("ticker__symbol", "headline")
    date_hierarchy = "published_at"
    raw_id_fields = ("ticker",)
    show_full_result_count = False

    @admin.display(description="headline")
    def short_headline(self, obj):
        return obj.headline if len(obj.headline) <= 100 else obj.headline[:99] + "…"


@admin.register(SocialPost)
class SocialPostAdmin(admin.ModelAdmin):
    list_display = ("ticker", "posted_at", "short_text", "sentiment", "author_label", "source", "provider")
    list_filter = ("source", "provider", "author_label")
    list_select_related = ("ticker",)
    search_fields = ("ticker__symbol", "text")
    date_hierarchy = "posted_at"
    raw_id_fields = ("ticker",)
    show_full_result_count = False

    @admin.display(description="text")
    def short_text(self, obj):
        return obj.text if len(obj.text) <= 100 else obj.text[:99] + "…"
