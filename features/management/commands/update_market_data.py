import json

from django.core.management.base import BaseCommand, CommandError

from features.providers import PROVIDERS
from features.services.market_updates import update_market_data
from features.services.news import update_news
from features.services.provider_config import PROVIDER_NAMES, default_provider_name


class Command(BaseCommand):
    help = (
        "Fetch the new daily bars of the active tickers from a data provider (the daily pipeline's first "
        "stage): incremental, rate-limited, metered as cost records and stopped by the daily cost limit. "
        f"Providers: {', '.join(PROVIDER_NAMES)} (or files:<folder>); default ML_MARKET_DATA_PROVIDER, "
        "else files (ML_DATA_PATH/prices). Keys come from <PROVIDER>_API_KEY, URLs from <PROVIDER>_BASE_URL."
    )

    def add_arguments(self, parser):
        parser.add_argument("--provider", help=f"one of {', '.join(PROVIDER_NAMES)} or files:<folder>")
        parser.add_argument("--tickers", help="comma-separated tickers (default: the active tickers)")
        parser.add_argument("--news", action="store_true",
                            help="also fetch news headlines (providers with a news endpoint: alphavantage)")
        parser.add_argument("--json", action="store_true", dest="as_json", help="end with one JSON line")

    def handle(self, *args, provider=None, tickers=None, news=False, as_json=False, **options):
        name = provider or default_provider_name()
        if news and not getattr(PROVIDERS.get(name.strip().lower()), "supports_news", False):
            raise CommandError(f"--news: {name} has no news endpoint (use --provider alphavantage)")
        symbols = [t for t in tickers.split(",") if t.strip()] if tickers else None
        try:
            summary = update_market_data(provider=name, tickers=symbols, progress=self.stderr.write)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        result = summary.as_dict()
        self.stdout.write(
            f"{summary.provider}: {summary.tickers_updated} of {summary.tickers_requested} tickers updated "
            f"({summary.tickers_fresh} already up to date), {summary.rows_added:,} rows added, "
            f"{summary.rows_updated:,} updated, {summary.rows_rejected:,} rejected; "
            f"{summary.calls} calls ({summary.rate_limit_wait_seconds:.1f} s waiting for the provider's rate limit), "
            f"${summary.cost_usd:.4f}"
        )
        for reason, count in result["failed_by_reason"].items():
            self.stdout.write(f"  failed {count}: {reason}")
        for ticker, message in list(result["failed"].items())[:20]:
            self.stdout.write(f"    {ticker}: {message}")
        if len(result["failed"]) > 20:
            self.stdout.write(f"    ... and {len(result['failed']) - 20} more")
        for reason, count in result["rejected_by_reason"].items():
            self.stdout.write(f"  rejected {count:,} rows: {reason}")
        if summary.warning:
            self.stderr.write(f"WARNING: {summary.warning}")
            self.stdout.write(f"  stopped: {summary.warning}; {len(summary.skipped)} tickers skipped")
        if news:
            try:
                news_summary = update_news(provider=summary.provider, tickers=symbols, progress=self.stderr.write)
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
            result["news"] = news_summary.as_dict()
            self.stdout.write(f"news: {news_summary.items_added} new items, {news_summary.calls} calls, "
                              f"${news_summary.cost_usd:.4f}")
            if news_summary.warning:
                self.stderr.write(f"WARNING: {news_summary.warning}")
        if as_json:
            self.stdout.write(json.dumps(result, sort_keys=True))
