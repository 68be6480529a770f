"""The universe: ``sync_universe`` upserts the exchanges' symbol directories (Nasdaq Trader's
``nasdaqlisted.txt`` / ``otherlisted.txt``, ``features.universe`` parses them) into ``Ticker`` and
marks listed-before tickers that left the directory inactive (never deleted: their bars stay);
``download_symbol_directory`` fetches the files through the provider layer, metered."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
from django.db import transaction
from django.utils import timezone

from features.models import IngestionRun, Ticker
from features.providers import ProviderConfig
from features.providers.base import BadResponseError, CallRecord, HttpProvider, NotFoundError
from features.providers.http import HttpResponse
from features.services.ingestion_runs import Progress, failure_recorded, say
from features.services.limits import shared_budget
from features.services.provider_config import provider_limits
from features.universe import load_universe, parse_symbol_directory
from investml.ledger import record_api_calls

__all__ = [
    "NASDAQTRADER_DEFAULT_URL",
    "SYMBOL_DIRECTORY_FILES",
    "SymbolDirectoryDownloader",
    "UniverseSyncError",
    "UniverseSyncSummary",
    "download_symbol_directory",
    "sync_universe",
]

NASDAQTRADER_DEFAULT_URL = "https://www.nasdaqtrader.com/dynamic/SymDir"
SYMBOL_DIRECTORY_FILES = ("nasdaqlisted.txt", "otherlisted.txt")


class UniverseSyncError(Exception):
    pass


@dataclass
class UniverseSyncSummary:
    sources: list[str] = field(default_factory=list)
    exchanges_covered: list[str] = field(default_factory=list)
    rows_read: int = 0
    listed: int = 0  # tickers kept after the exchange/ETF filters
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deactivated: int = 0
    reactivated: int = 0
    deactivated_tickers: list[str] = field(default_factory=list)
    calls: int = 0
    ingestion_run: int | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "sources": self.sources, "exchanges_covered": self.exchanges_covered, "rows_read": self.rows_read,
            "listed": self.listed, "added": self.added, "updated": self.updated, "unchanged": self.unchanged,
            "deactivated": self.deactivated, "reactivated": self.reactivated,
            "deactivated_tickers": self.deactivated_tickers, "calls": self.calls,
            "ingestion_run": self.ingestion_run, "seconds": round(self.seconds, 3),
        }


def _directory_text(source: str | Path | bytes) -> str:
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.decode("utf-8-sig", errors="replace")


def _covered_exchanges(text: str) -> set[str]:
    header = text.lstrip().split("\n", 1)[0]
    if header.startswith("Symbol|"):
        return {"NASDAQ"}
    if header.startswith("ACT Symbol|"):
        return {"NYSE", "AMEX", "OTHER"}
    raise UniverseSyncError(f"not a symbol directory file (header {header[:60]!r})")


class SymbolDirectoryDownloader(HttpProvider):
    """Downloads ``nasdaqlisted.txt`` / ``otherlisted.txt`` with the provider layer's retries,
    rate limit and metering. Base URL: ``NASDAQTRADER_BASE_URL`` (default: the official location)."""

    name = "nasdaqtrader"

    def fetch_daily(self, symbol: str, *, since: date | None = None) -> pd.DataFrame:
        raise NotImplementedError("the symbol directory has no price bars")

    def fetch_file(self, filename: str) -> bytes:
        def parse(response: HttpResponse) -> bytes:
            text = response.body[:200].decode("utf-8-sig", errors="replace").lstrip()
            if not (text.startswith("Symbol|") or text.startswith("ACT Symbol|")):
                raise BadResponseError(f"{filename} is not a symbol directory file: {text[:60]!r}")
            return response.body

        return self.request(f"{self.config.base_url}/{filename}", endpoint=filename, symbol=None, parse=parse)

    def _classify_status(self, response: HttpResponse, symbol: str | None):
        error = super()._classify_status(response, symbol)
        if isinstance(error, NotFoundError):  # not a ticker: say which file is missing
            return NotFoundError(f"{self.redact(response.url)} not found (HTTP 404)", provider=self.name, status=404)
        return error


def download_symbol_directory(*, files: Iterable[str] = SYMBOL_DIRECTORY_FILES,
                              progress: Progress | None = None) -> tuple[list[bytes], int]:
    """Download the symbol directory files; every request is metered. Returns (contents, calls)."""
    limits = {"base_url": NASDAQTRADER_DEFAULT_URL, "requests_per_minute": 60.0, "requests_per_day": None,
              **provider_limits("nasdaqtrader")}
    config = ProviderConfig.from_env("nasdaqtrader", limits)
    records: list[CallRecord] = []
    day = timezone.localdate()
    downloader = SymbolDirectoryDownloader(config, on_call=records.append, budget=shared_budget(day=day))
    contents = []
    try:
        for filename in files:
            say(progress, f"downloading {config.base_url}/{filename}")
            contents.append(downloader.fetch_file(filename))
    finally:
        record_api_calls(records=records, day=day)
    return contents, len(records)


def sync_universe(
    *,
    sources: list[str | Path | bytes],
    exchanges: Iterable[str] = ("NYSE", "NASDAQ", "AMEX"),
    include_etfs: bool = True,
    common_only: bool = False,
    force: bool = False,
    source_label: str = "file",
    progress: Progress | None = None,
) -> UniverseSyncSummary:
    """Upsert the tickers of the symbol-directory ``sources`` and deactivate the ones that left.

    Kept: listings on ``exchanges`` (ETFs unless ``include_etfs=False``; only common stock with
    ``common_only``), inserted or updated (name, exchange, ETF flag) and made active.
    Deactivated: active tickers absent from every given file, among the exchanges the files cover
    (``nasdaqlisted`` covers NASDAQ, ``otherlisted`` NYSE, AMEX and the rest); tickers of unknown
    exchange (created by a price file) only when both files are given. Listings filtered out by
    ``exchanges``/ETF/common-only are left as they are. Nothing is deleted; bars stay.
    A sync that would deactivate more than 10% (and over 25) of the tickers in scope stops unless
    ``force``: a truncated download must not retire the universe.
    """
    started = time.perf_counter()
    summary = UniverseSyncSummary(sources=[s if isinstance(s, str) else str(s) if isinstance(s, Path) else "<download>"
                                           for s in sources])
    run = IngestionRun.objects.create(kind=IngestionRun.Kind.UNIVERSE, source=source_label,
                                      file=", ".join(summary.sources)[:500])
    summary.ingestion_run = run.id
    with failure_recorded(run, started=started):
        texts = [_directory_text(s) for s in sources]
        covered: set[str] = set()
        listed_anywhere: set[str] = set()
        for text in texts:
            covered |= _covered_exchanges(text)
            frame = parse_symbol_directory(text)
            summary.rows_read += len(frame)
            listed_anywhere |= set(frame["symbol"])
        kept = load_universe(texts, exchanges=[e.upper() for e in exchanges], include_etfs=include_etfs,
                             common_only=common_only)
        kept = kept[kept["symbol"].str.len() <= Ticker._meta.get_field("symbol").max_length]
        summary.listed = len(kept)
        summary.exchanges_covered = sorted(covered)
        full = {"NASDAQ", "NYSE", "AMEX"} <= covered
        with transaction.atomic():
            _upsert_listed(kept, summary)
            scope = Ticker.objects.filter(active=True, exchange__in=sorted(covered | ({""} if full else set())))
            in_scope = scope.count()
            gone = sorted(set(scope.values_list("symbol", flat=True)) - listed_anywhere)
            if len(gone) > max(25, 0.10 * in_scope) and not force:
                raise UniverseSyncError(
                    f"refusing to deactivate {len(gone)} of {in_scope} active tickers on {', '.join(sorted(covered))} "
                    "(is a directory file truncated?); pass --force to apply"
                )
            for start in range(0, len(gone), 500):
                Ticker.objects.filter(symbol__in=gone[start : start + 500]).update(active=False, updated_at=timezone.now())
            summary.deactivated = len(gone)
            summary.deactivated_tickers = gone
    summary.seconds = time.perf_counter() - started
    run.status = IngestionRun.Status.SUCCEEDED
    run.rows_read, run.rows_loaded = summary.rows_read, summary.added
    run.rows_updated = summary.updated + summary.reactivated + summary.deactivated
    run.rows_unchanged, run.tickers = summary.unchanged, summary.listed
    if summary.deactivated:
        run.error = f"deactivated {summary.deactivated}: {', '.join(summary.deactivated_tickers[:200])}"[:5000]
    run.finished_at, run.duration_seconds = timezone.now(), summary.seconds
    run.save()
    say(progress, f"universe: {summary.listed} listed, {summary.added} added, {summary.updated} updated, "
        f"{summary.reactivated} reactivated, {summary.deactivated} deactivated")
    return summary


def _upsert_listed(kept: pd.DataFrame, summary: UniverseSyncSummary) -> None:
    symbols = kept["symbol"].tolist()
    existing: dict[str, Ticker] = {}
    for start in range(0, len(symbols), 500):
        for ticker in Ticker.objects.filter(symbol__in=symbols[start : start + 500]):
            existing[ticker.symbol] = ticker
    now = timezone.now()
    new, changed = [], []
    for row in kept.itertuples(index=False):
        name = str(row.name)[:200]
        ticker = existing.get(row.symbol)
        if ticker is None:
            new.append(Ticker(symbol=row.symbol, name=name, exchange=row.exchange, is_etf=bool(row.is_etf),
                              active=True))
            continue
        if not ticker.active:
            summary.reactivated += 1
        elif (ticker.name, ticker.exchange, ticker.is_etf) != (name, row.exchange, bool(row.is_etf)):
            summary.updated += 1
        else:
            summary.unchanged += 1
            continue
        ticker.name, ticker.exchange, ticker.is_etf, ticker.active, ticker.updated_at = (
            name, row.exchange, bool(row.is_etf), True, now)
        changed.append(ticker)
    Ticker.objects.bulk_create(new, batch_size=1_000, ignore_conflicts=True)
    Ticker.objects.bulk_update(changed, ["name", "exchange", "is_etf", "active", "updated_at"], batch_size=1_000)
    summary.added = len(new)

