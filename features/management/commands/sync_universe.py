import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from features.providers import ProviderError
from features.services.universe_sync import UniverseSyncError, download_symbol_directory, sync_universe


class Command(BaseCommand):
    help = (
        "Sync the ticker universe from the exchanges' symbol directories (nasdaqlisted.txt, otherlisted.txt; "
        "plain or .gz), or download them with 'nasdaqtrader' (NASDAQTRADER_BASE_URL). Listed tickers are "
        "added or updated and made active; tickers that left the directory become inactive (their bars stay)."
    )

    def add_arguments(self, parser):
        parser.add_argument("source", help="a symbol directory file, or 'nasdaqtrader' to download both")
        parser.add_argument("paths", nargs="*", type=Path, help="more symbol directory files")
        parser.add_argument("--exchanges", default="NYSE,NASDAQ,AMEX",
                            help="exchanges to keep (NYSE, NASDAQ, AMEX, OTHER); default NYSE,NASDAQ,AMEX")
        parser.add_argument("--no-etfs", action="store_true", help="leave ETFs out")
        parser.add_argument("--common-only", action="store_true",
                            help="leave warrants, units, rights, preferreds and notes out")
        parser.add_argument("--force", action="store_true",
                            help="apply even when more than 10%% of the tickers in scope would be deactivated")
        parser.add_argument("--json", action="store_true", dest="as_json", help="end with one JSON line")

    def handle(self, *args, source, paths, exchanges, no_etfs, common_only, force, as_json, **options):
        label, calls = "file", 0
        if source.strip().lower() == "nasdaqtrader":
            if paths:
                raise CommandError("give either 'nasdaqtrader' or files, not both")
            try:
                sources, calls = download_symbol_directory(progress=self.stderr.write)
            except ProviderError as exc:
                raise CommandError(f"download failed: {exc}") from exc
            label = "nasdaqtrader"
        else:
            sources = [Path(source), *paths]
            for path in sources:
                if not path.is_file():
                    raise CommandError(f"{path}: no such file")
        try:
            summary = sync_universe(
                sources=sources, exchanges=[e.strip().upper() for e in exchanges.split(",") if e.strip()],
                include_etfs=not no_etfs, common_only=common_only, force=force, source_label=label,
                progress=self.stderr.write,
            )
        except (UniverseSyncError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        summary.calls = calls
        self.stdout.write(
            f"{summary.listed:,} tickers listed on {', '.join(summary.exchanges_covered)}: {summary.added:,} added, "
            f"{summary.updated:,} updated, {summary.reactivated:,} reactivated, {summary.deactivated:,} deactivated, "
            f"{summary.unchanged:,} unchanged"
        )
        if summary.deactivated_tickers:
            shown = ", ".join(summary.deactivated_tickers[:30])
            more = f" and {summary.deactivated - 30} more" if summary.deactivated > 30 else ""
            self.stdout.write(f"  deactivated: {shown}{more}")
        if as_json:
            self.stdout.write(json.dumps(summary.as_dict(), sort_keys=True))
