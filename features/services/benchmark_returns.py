"""Benchmark returns: a ``date,return`` CSV of a benchmark's daily returns upserted into
``BenchmarkReturn`` (the market series of the feature builds reads ``MARKET_SYMBOL``'s)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from django.db import transaction

from features.models import BenchmarkReturn
from features.services.ingestion_runs import Progress, say
from features.services.store_errors import FeatureStoreError

MARKET_SYMBOL = "SPY"


@dataclass
class BenchmarkIngestSummary:
    symbol: str
    rows_read: int = 0
    rows_loaded: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0
    rows_rejected: int = 0
    first_date: date | None = None
    last_date: date | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["first_date"] = self.first_date.isoformat() if self.first_date else None
        d["last_date"] = self.last_date.isoformat() if self.last_date else None
        d["seconds"] = round(self.seconds, 3)
        return d


class BenchmarkFileError(FeatureStoreError):
    pass


def _parse_benchmark_csv(path: Path) -> tuple[pd.DataFrame, int]:
    """(date, ret) rows of a ``date,return`` CSV and the number of rows rejected."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise BenchmarkFileError(f"{path}: cannot read: {exc}") from exc
    cols = {c.strip().lower(): c for c in raw.columns}
    date_col = next((cols[c] for c in ("date", "timestamp", "datetime") if c in cols), None)
    ret_col = next((cols[c] for c in ("return", "ret", "returns") if c in cols), None)
    if date_col is None or ret_col is None:
        raise BenchmarkFileError(f"{path}: expected columns date,return (found {', '.join(raw.columns)})")
    stamps = pd.to_datetime(raw[date_col].str.strip(), errors="coerce", utc=True, format="mixed")
    rets = pd.to_numeric(raw[ret_col].str.strip(), errors="coerce")
    ok = stamps.notna() & rets.notna() & np.isfinite(rets) & (rets > -1.0)
    frame = pd.DataFrame({"date": stamps[ok].dt.date, "ret": rets[ok].astype(float)})
    dup = frame["date"].duplicated(keep=False)
    frame = frame.loc[~dup]
    return frame.sort_values("date").reset_index(drop=True), int((~ok).sum() + dup.sum())


def ingest_benchmark_returns(*, path: Path, symbol: str = MARKET_SYMBOL,
                             progress: Progress | None = None) -> BenchmarkIngestSummary:
    """Upsert a ``date,return`` CSV of daily benchmark returns (dates may carry a time and offset,
    e.g. "1993-02-01 00:00:00+00:00"; the UTC date is used). Re-running changes nothing; rows with
    an unparseable date or return, a return <= -100 %, or a date listed twice are rejected."""
    started = time.perf_counter()
    symbol = symbol.strip().upper()
    if not symbol:
        raise BenchmarkFileError("empty benchmark symbol")
    frame, rejected = _parse_benchmark_csv(Path(path))
    summary = BenchmarkIngestSummary(symbol=symbol, rows_read=len(frame) + rejected, rows_rejected=rejected)
    with transaction.atomic():
        existing = dict(BenchmarkReturn.objects.filter(symbol=symbol).values_list("date", "ret"))
        ids = dict(BenchmarkReturn.objects.filter(symbol=symbol).values_list("date", "id"))
        new, changed = [], []
        for d, r in zip(frame["date"].tolist(), frame["ret"].tolist(), strict=True):
            old = existing.get(d)
            if old is None:
                new.append(BenchmarkReturn(symbol=symbol, date=d, ret=r))
            elif old != r:
                changed.append(BenchmarkReturn(id=ids[d], symbol=symbol, date=d, ret=r))
        BenchmarkReturn.objects.bulk_create(new, batch_size=2_000)
        BenchmarkReturn.objects.bulk_update(changed, ["ret"], batch_size=2_000)
    summary.rows_loaded, summary.rows_updated = len(new), len(changed)
    summary.rows_unchanged = len(frame) - len(new) - len(changed)
    if len(frame):
        summary.first_date, summary.last_date = frame["date"].iloc[0], frame["date"].iloc[-1]
    summary.seconds = time.perf_counter() - started
    say(progress, f"{Path(path).name}: {symbol} {summary.first_date}..{summary.last_date}: "
         f"{summary.rows_loaded:,} new, {summary.rows_updated:,} updated, {summary.rows_unchanged:,} unchanged, "
         f"{summary.rows_rejected:,} rejected")
    return summary
