"""Writes to the market-data tables: price and fundamentals ingestion.

Bars are merged set-wise: rows go to a temporary staging table (COPY on PostgreSQL), then one
UPDATE touches only rows whose values differ and one INSERT adds the new ones. A re-run of the same
file therefore changes nothing, a corrected row updates, and a failure rolls the whole file back.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from django.db import connection, transaction
from django.utils import timezone

from features.fundamentals import parse_snapshot
from features.models import CorporateAction, FundamentalSnapshot, IngestionRun, PriceBar, Ticker
from features.pricefiles import ParsedPrices, read_price_file

logger = logging.getLogger(__name__)

STAGE_CHUNK_ROWS = 250_000
MAX_REJECTED_ROWS_STORED = 1_000

Progress = Callable[[str], None]


@dataclass
class IngestSummary:
    rows_read: int = 0
    rows_loaded: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0
    rows_rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    tickers: int = 0
    files: int = 0
    seconds: float = 0.0
    run_ids: list[int] = field(default_factory=list)
    symbols: set[str] = field(default_factory=set)

    def add(self, other: IngestSummary) -> None:
        for name in ("rows_read", "rows_loaded", "rows_updated", "rows_unchanged", "rows_rejected", "files"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, count in other.rejected_by_reason.items():
            self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + count
        self.run_ids.extend(other.run_ids)
        self.symbols |= other.symbols
        self.tickers = len(self.symbols)

    def as_dict(self) -> dict:
        return {
            "rows_read": self.rows_read,
            "rows_loaded": self.rows_loaded,
            "rows_updated": self.rows_updated,
            "rows_unchanged": self.rows_unchanged,
            "rows_rejected": self.rows_rejected,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "tickers": self.tickers,
            "files": self.files,
            "seconds": round(self.seconds, 3),
            "ingestion_runs": self.run_ids,
        }


def _log(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)
    else:
        logger.info(message)


def ensure_tickers(*, symbols: Iterable[str], sectors: dict[str, str] | None = None) -> dict[str, int]:
    """Create missing tickers (active) and return symbol -> id for all of them."""
    symbols = sorted(set(symbols))
    Ticker.objects.bulk_create([Ticker(symbol=s) for s in symbols], ignore_conflicts=True, batch_size=2_000)
    ids: dict[str, int] = {}
    for start in range(0, len(symbols), 2_000):
        chunk = symbols[start : start + 2_000]
        ids.update(Ticker.objects.filter(symbol__in=chunk).values_list("symbol", "id"))
    if sectors:
        for symbol, sector in sectors.items():
            if sector and symbol in ids:
                Ticker.objects.filter(id=ids[symbol], sector="").update(sector=sector)
    return ids


_BAR_FIELDS = ("open", "high", "low", "close", "adj_close", "volume")


def _stage_table() -> str:
    # Schema-qualified so a DROP can never hit a permanent table of that name.
    return "pg_temp.stage_bars" if connection.vendor == "postgresql" else "temp.stage_bars"


def _stage_bars(cursor, frame: pd.DataFrame, progress: Progress | None) -> None:
    vendor = connection.vendor
    # Dropped explicitly too: inside an outer transaction ON COMMIT never fires between files.
    cursor.execute(f"DROP TABLE IF EXISTS {_stage_table()}")
    if vendor == "postgresql":
        cursor.execute(
            "CREATE TEMP TABLE stage_bars (ticker_id bigint, date date, open double precision, "
            "high double precision, low double precision, close double precision, "
            "adj_close double precision, volume bigint) ON COMMIT DROP"
        )
    else:
        cursor.execute(
            "CREATE TEMP TABLE stage_bars (ticker_id integer, date text, open real, high real, "
            "low real, close real, adj_close real, volume integer)"
        )
    columns = ["ticker_id", "date", *_BAR_FIELDS]
    started = time.perf_counter()
    for start in range(0, len(frame), STAGE_CHUNK_ROWS):
        chunk = frame.iloc[start : start + STAGE_CHUNK_ROWS][columns]
        if vendor == "postgresql":
            buffer = io.StringIO()
            # repr-exact floats, so unchanged rows compare equal to what is stored
            chunk.to_csv(buffer, header=False, index=False, float_format="%.17g")
            with cursor.cursor.copy(f"COPY stage_bars ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)") as copy:
                copy.write(buffer.getvalue())
        else:
            rows = list(
                zip(
                    chunk["ticker_id"].tolist(),
                    [d.isoformat() for d in chunk["date"]],
                    *(chunk[c].tolist() for c in _BAR_FIELDS),
                    strict=True,
                )
            )
            cursor.executemany("INSERT INTO stage_bars VALUES (?, ?, ?, ?, ?, ?, ?, ?)".replace("?", "%s"), rows)
        done = min(start + STAGE_CHUNK_ROWS, len(frame))
        elapsed = time.perf_counter() - started
        _log(progress, f"  staged {done:,}/{len(frame):,} rows ({done / max(elapsed, 1e-9):,.0f} rows/s)")


def _merge_staged(cursor) -> tuple[int, int]:
    """Update changed rows, insert new ones; return (updated, inserted)."""
    table = PriceBar._meta.db_table
    # Null-safe "differs": IS DISTINCT FROM on PostgreSQL, IS NOT on SQLite.
    distinct = "IS NOT" if connection.vendor == "sqlite" else "IS DISTINCT FROM"
    differs = " OR ".join(f"p.{c} {distinct} s.{c}" for c in _BAR_FIELDS)
    assignments = ", ".join(f"{c} = s.{c}" for c in _BAR_FIELDS)
    cursor.execute(
        f"UPDATE {table} AS p SET {assignments} FROM stage_bars AS s "
        f"WHERE p.ticker_id = s.ticker_id AND p.date = s.date AND ({differs})"
    )
    updated = cursor.rowcount
    columns = ", ".join(("ticker_id", "date", *_BAR_FIELDS))
    cursor.execute(
        f"INSERT INTO {table} ({columns}) SELECT {columns} FROM stage_bars AS s "
        f"WHERE NOT EXISTS (SELECT 1 FROM {table} AS p WHERE p.ticker_id = s.ticker_id AND p.date = s.date)"
    )
    inserted = cursor.rowcount
    cursor.execute(f"DROP TABLE {_stage_table()}")
    return updated, inserted


def _store_actions(actions: pd.DataFrame, ticker_ids: dict[str, int], source: str) -> None:
    if actions.empty:
        return
    for row in actions.itertuples(index=False):
        CorporateAction.objects.update_or_create(
            ticker_id=ticker_ids[row.ticker], date=row.date, kind=row.kind,
            defaults={"value": float(row.value), "source": source},
        )


def merge_bars(*, parsed: ParsedPrices, source: str, progress: Progress | None = None) -> tuple[int, int, int]:
    """Merge validated bars into the store in one transaction; return (inserted, updated, unchanged)."""
    bars = parsed.bars
    with transaction.atomic():
        ticker_ids = ensure_tickers(symbols=bars["ticker"].unique().tolist())
        frame = bars.assign(ticker_id=bars["ticker"].map(ticker_ids).astype("int64"))
        with connection.cursor() as cursor:
            _stage_bars(cursor, frame, progress)
            updated, inserted = _merge_staged(cursor)
        _store_actions(parsed.actions, ticker_ids, source)
    return inserted, updated, len(bars) - inserted - updated


def ingest_price_file(*, path: Path, ticker: str | None = None, source: str = "file",
                      progress: Progress | None = None) -> IngestSummary:
    """Ingest one price file, recording an IngestionRun whatever happens."""
    started = time.perf_counter()
    run = IngestionRun.objects.create(kind=IngestionRun.Kind.PRICES, source=source, file=str(path))
    summary = IngestSummary(files=1, run_ids=[run.id])
    try:
        _log(progress, f"{path.name}: reading")
        parsed = read_price_file(path, ticker=ticker)
        read_s = time.perf_counter() - started
        _log(progress, f"{path.name}: read {parsed.rows_read:,} rows, {len(parsed.bars):,} valid, "
             f"{len(parsed.rejected):,} rejected, {len(parsed.tickers)} tickers "
             f"({parsed.rows_read / max(read_s, 1e-9):,.0f} rows/s)")
        for rejected in parsed.rejected.head(20).itertuples(index=False):
            _log(progress, f"  rejected line {rejected.line} ({rejected.ticker} {rejected.date}): {rejected.reason}")
        if len(parsed.rejected) > 20:
            _log(progress, f"  ... and {len(parsed.rejected) - 20:,} more rejected rows (see the ingestion run)")
        inserted, updated, unchanged = merge_bars(parsed=parsed, source=str(path), progress=progress)
    except Exception as exc:
        run.status = IngestionRun.Status.FAILED
        run.error = str(exc)
        run.finished_at = timezone.now()
        run.duration_seconds = time.perf_counter() - started
        run.save()
        raise
    summary.rows_read = parsed.rows_read
    summary.rows_loaded, summary.rows_updated, summary.rows_unchanged = inserted, updated, unchanged
    summary.rows_rejected = len(parsed.rejected)
    summary.rejected_by_reason = parsed.rejected_by_reason
    summary.symbols = set(parsed.tickers)
    summary.tickers = len(summary.symbols)
    summary.seconds = time.perf_counter() - started

    run.status = IngestionRun.Status.SUCCEEDED
    run.rows_read, run.rows_loaded, run.rows_updated = summary.rows_read, inserted, updated
    run.rows_unchanged, run.rows_rejected = unchanged, summary.rows_rejected
    run.rejected_by_reason = summary.rejected_by_reason
    run.rejected_rows = [
        {"line": int(r.line), "ticker": r.ticker, "date": r.date, "reason": r.reason}
        for r in parsed.rejected.head(MAX_REJECTED_ROWS_STORED).itertuples(index=False)
    ]
    run.tickers = summary.tickers
    run.finished_at = timezone.now()
    run.duration_seconds = summary.seconds
    run.save()
    _log(progress, f"{path.name}: {inserted:,} new, {updated:,} updated, {unchanged:,} unchanged, "
         f"{summary.rows_rejected:,} rejected in {summary.seconds:.1f}s "
         f"({summary.rows_read / max(summary.seconds, 1e-9):,.0f} rows/s)")
    return summary


def ingest_price_files(*, paths: list[Path], ticker: str | None = None, source: str = "file",
                       progress: Progress | None = None) -> IngestSummary:
    started = time.perf_counter()
    total = IngestSummary()
    for path in paths:
        total.add(ingest_price_file(path=path, ticker=ticker, source=source, progress=progress))
    total.seconds = time.perf_counter() - started
    return total


def ingest_fundamentals_snapshot(*, path: Path, progress: Progress | None = None) -> IngestSummary:
    """Upsert one snapshot file; each row is (ticker, as_of). Re-running changes nothing."""
    started = time.perf_counter()
    run = IngestionRun.objects.create(kind=IngestionRun.Kind.FUNDAMENTALS, source="file", file=str(path))
    try:
        frame = parse_snapshot(path)
        with transaction.atomic():
            ids = ensure_tickers(
                symbols=frame["ticker"].tolist(), sectors=dict(zip(frame["ticker"], frame["sector"], strict=True))
            )
            existing = {
                (row["ticker_id"]): row
                for row in FundamentalSnapshot.objects.filter(
                    as_of=frame["as_of"].iloc[0], ticker_id__in=ids.values()
                ).values()
            } if len(frame) else {}
            new, changed = [], []
            fields = ("price", "pe_ratio", "eps", "market_cap", "dividend_yield", "sector")
            for row in frame.itertuples(index=False):
                values = {f: (None if pd.isna(getattr(row, f)) else getattr(row, f)) for f in fields}
                current = existing.get(ids[row.ticker])
                if current is None:
                    new.append(FundamentalSnapshot(ticker_id=ids[row.ticker], as_of=row.as_of,
                                                   source=path.name, **values))
                elif any(current[f] != values[f] for f in fields):
                    obj = FundamentalSnapshot(id=current["id"], ticker_id=ids[row.ticker], as_of=row.as_of,
                                              source=path.name, **values)
                    changed.append(obj)
            FundamentalSnapshot.objects.bulk_create(new, batch_size=1_000)
            FundamentalSnapshot.objects.bulk_update(changed, [*fields, "source"], batch_size=1_000)
    except Exception as exc:
        run.status, run.error = IngestionRun.Status.FAILED, str(exc)
        run.finished_at, run.duration_seconds = timezone.now(), time.perf_counter() - started
        run.save()
        raise
    summary = IngestSummary(
        rows_read=len(frame), rows_loaded=len(new), rows_updated=len(changed),
        rows_unchanged=len(frame) - len(new) - len(changed), tickers=len(frame), files=1,
        seconds=time.perf_counter() - started, run_ids=[run.id], symbols=set(frame["ticker"]),
    )
    run.status = IngestionRun.Status.SUCCEEDED
    run.rows_read, run.rows_loaded = summary.rows_read, summary.rows_loaded
    run.rows_updated, run.rows_unchanged, run.tickers = summary.rows_updated, summary.rows_unchanged, summary.tickers
    run.finished_at, run.duration_seconds = timezone.now(), summary.seconds
    run.save()
    _log(progress, f"{path.name}: as of {frame['as_of'].iloc[0] if len(frame) else '-'}: "
         f"{summary.rows_loaded} new, {summary.rows_updated} updated, {summary.rows_unchanged} unchanged")
    return summary
