from django.contrib import admin

from features.models import CorporateAction, FundamentalSnapshot, IngestionRun, PriceBar, Ticker


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
