"""Social-media posts: file ingestion (``ingest_social``), provider updates (StockTwits) for the daily
pipeline, and the daily per-ticker aggregates the feature store reads.

A post is stored once per ticker it is about (``SocialPost``, unique on source, post key and ticker):
the post key is the source's post id, else ``h:`` + sha256 of author, time and whitespace-normalized
text. Every post is scored with ``features.social.score_post`` whatever its origin, so scores from
files and providers are comparable. Authors are kept only as a keyed hash (HMAC of ``SECRET_KEY``):
enough to tell authors apart, no handle or user id stored.

Times: with an offset (``Z``, ``+01:00``) they are converted; without one they are New York time;
epoch seconds or milliseconds are UTC; a date without a time of day is taken as the end of that day
(23:59:59 New York), so it counts for the next session: a post of unknown hour is never used before
the close it may have followed. ``aggregate_social_daily`` maps posts to the trading day they can
first affect (at or after the 16:00 close, or on a closed day: the next session).
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import transaction
from django.db.models import BigIntegerField, Max
from django.db.models.functions import Cast
from django.utils import timezone

from features.models import IngestionRun, SocialPost, Ticker
from features.providers import SOCIAL_PROVIDERS
from features.services.ingestion_runs import (
    FileIngestSummary,
    Progress,
    failure_recorded,
    file_run_succeeded,
    say,
)
from features.services.news import parse_news_times
from features.services.provider_updates import (
    MeteredProvider,
    TickerUpdateSummary,
    newest_by_ticker,
    requested_tickers,
    update_each_ticker,
)
from features.social import extract_cashtags, score_posts
from features.trading_calendar import MARKET_TZ

READ_CHUNK_ROWS = 50_000
BATCH_SIZE = 1_000
MAX_REJECTED_ROWS_STORED = 1_000
SOURCE_MAX = SocialPost._meta.get_field("source").max_length
POST_ID_MAX = 64  # longer ids are hashed into the key
FUTURE_TOLERANCE = timedelta(hours=1)  # clock skew; a post later than this is dated wrongly
DEFAULT_SOURCE = "file"
PROVIDER_SETTING = "ML_SOCIAL_PROVIDER"

# Column names a file may use (first match wins, case-insensitive).
_ALIASES = {
    "time": ("datetime_utc", "created_at", "posted_at", "timestamp", "datetime", "time", "date"),
    "text": ("text", "body", "message", "content", "tweet", "headline"),
    "ticker": ("ticker", "tickers", "symbol", "symbols"),
    "source": ("source", "platform"),
    "author": ("author_id", "user_id", "author", "user", "username"),
    "post_id": ("post_id", "tweet_id", "message_id", "id"),
    "label": ("author_sentiment", "sentiment", "label"),
}
_SYMBOL_RE = re.compile(r"^[A-Z][A-Z0-9]{0,9}(?:[.\-][A-Z0-9]{1,4})?$")
_SPLIT_RE = re.compile(r"[\s,;|]+")
_DATE_ONLY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$|^\d{8}$")
_EPOCH_RE = re.compile(r"^\d{9,13}(?:\.\d+)?$")


class SocialFileError(ValueError):
    """The file as a whole cannot be read (no such file, missing columns, not CSV or JSON lines)."""


# Parsing (no database) ---------------------------------------------------------------------------
def parse_post_times(values: pd.Series) -> pd.Series:
    """Aware UTC timestamps (NaT where unreadable): offsets converted, naive times read as New York
    time, epoch seconds/milliseconds as UTC, date-only values as 23:59:59 New York of that day."""
    text = values.astype("string").str.strip()
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    epoch = text.str.fullmatch(_EPOCH_RE.pattern).fillna(False).astype(bool)
    if epoch.any():
        number = pd.to_numeric(text[epoch], errors="coerce")
        millis = number > 1e11
        stamps = pd.Series(pd.NaT, index=number.index, dtype="datetime64[ns, UTC]")
        stamps[~millis] = pd.to_datetime(number[~millis], unit="s", utc=True, errors="coerce")
        stamps[millis] = pd.to_datetime(number[millis], unit="ms", utc=True, errors="coerce")
        out[epoch] = stamps
    day_only = text.str.fullmatch(_DATE_ONLY_RE.pattern).fillna(False).astype(bool) & ~epoch
    if day_only.any():
        days = pd.to_datetime(text[day_only].str.replace("-", ""), format="%Y%m%d", errors="coerce")
        end = (days + pd.Timedelta(hours=23, minutes=59, seconds=59)).dt.tz_localize(MARKET_TZ, ambiguous="NaT",
                                                                                     nonexistent="shift_forward")
        out[day_only] = end.dt.tz_convert(UTC)
    rest = ~epoch & ~day_only & text.notna() & (text != "")
    if rest.any():
        out[rest] = parse_news_times(text[rest])
    return out


def _canonical_columns(columns: list[str]) -> dict[str, str]:
    """file column -> canonical name, for the columns an alias names."""
    lower = {str(c).strip().lower(): c for c in columns}
    out: dict[str, str] = {}
    for canonical, aliases in _ALIASES.items():
        for alias in aliases:
            if alias in lower and lower[alias] not in out:
                out[lower[alias]] = canonical
                break
    return out


def _flatten_object(obj: dict[str, Any]) -> dict[str, Any]:
    """One JSON object -> canonical fields; a StockTwits message (``body``, ``user``, ``symbols``,
    ``entities.sentiment.basic``) as the API returns it, or a flat object with the CSV column names."""
    if "body" in obj and ("user" in obj or "entities" in obj or "symbols" in obj):
        user = obj.get("user") if isinstance(obj.get("user"), dict) else {}
        entities = obj.get("entities") if isinstance(obj.get("entities"), dict) else {}
        sentiment = entities.get("sentiment") if isinstance(entities.get("sentiment"), dict) else {}
        symbols = [s.get("symbol") for s in obj.get("symbols") or [] if isinstance(s, dict) and s.get("symbol")]
        return {
            "time": obj.get("created_at"), "text": obj.get("body"),
            "ticker": " ".join(map(str, symbols)) if symbols else None,
            "source": obj.get("source") if isinstance(obj.get("source"), str) else "stocktwits",
            "author": user.get("id") if user.get("id") is not None else user.get("username"),
            "post_id": obj.get("id"), "label": sentiment.get("basic"),
        }
    mapping = _canonical_columns(list(obj))
    flat: dict[str, Any] = {}
    for key, canonical in mapping.items():
        value = obj[key]
        if canonical == "ticker" and isinstance(value, list):
            value = " ".join(str(v.get("symbol", "")) if isinstance(v, dict) else str(v) for v in value)
        elif canonical == "author" and isinstance(value, dict):
            value = value.get("id") if value.get("id") is not None else value.get("username")
        flat[canonical] = value
    return flat


def _is_jsonl(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".json", ".json.gz"))


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _raw_jsonl(path: Path, *, limit: int | None, chunk_rows: int) -> Iterator[pd.DataFrame]:
    rows: list[dict[str, Any]] = []
    read = 0
    with _open_text(path) as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if limit is not None and read >= limit:
                break
            read += 1
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                # strings, as a CSV reads: an id of 11 is "11", not a float of a mixed column
                flat = {k: None if v is None else str(v) for k, v in _flatten_object(obj).items()}
                rows.append({**flat, "line": number, "reason": None})
            else:
                rows.append({"line": number, "reason": "bad_json"})
            if len(rows) >= chunk_rows:
                yield pd.DataFrame(rows)
                rows = []
    if rows:
        yield pd.DataFrame(rows)


def _raw_csv(path: Path, *, limit: int | None, chunk_rows: int) -> Iterator[pd.DataFrame]:
    try:
        header = pd.read_csv(path, nrows=0)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SocialFileError(f"{path}: cannot read as CSV: {exc}") from exc
    mapping = _canonical_columns(list(header.columns))
    missing = [c for c in ("time", "text") if c not in mapping.values()]
    if missing:
        raise SocialFileError(
            f"{path}: missing required column(s) {', '.join(missing)} (a time: {', '.join(_ALIASES['time'])}; "
            f"a text: {', '.join(_ALIASES['text'])}; found: {', '.join(map(str, header.columns))})")
    # keep_default_na=False: "NA" and "NULL" are tickers and words, not missing values
    reader = pd.read_csv(path, usecols=list(mapping), dtype=str, keep_default_na=False, na_values=[],
                         chunksize=chunk_rows, nrows=limit)
    offset = 0
    try:
        for raw in reader:
            frame = raw.rename(columns=mapping)
            frame["line"] = np.arange(offset + 2, offset + 2 + len(frame))  # 1-based, after the header
            frame["reason"] = None
            offset += len(frame)
            yield frame
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SocialFileError(f"{path}: unreadable CSV after line {offset + 1}: {exc}") from exc


def _tickers_of(values: pd.Series | None, texts: pd.Series) -> tuple[list[list[str]], np.ndarray]:
    """Per row: its tickers (the ticker column's symbols, else the text's cash-tags) and whether a
    ticker column value was given but none of it reads as a symbol."""
    out: list[list[str]] = []
    invalid = np.zeros(len(texts), dtype=bool)
    given = values.fillna("").astype(str).tolist() if values is not None else [""] * len(texts)
    for i, (raw, text) in enumerate(zip(given, texts.tolist(), strict=True)):
        raw = raw.strip()
        if raw:
            symbols = [s.lstrip("$").upper() for s in _SPLIT_RE.split(raw) if s.strip("$ ")]
            good = [s for s in dict.fromkeys(symbols) if _SYMBOL_RE.match(s)]
            invalid[i] = not good
            out.append(good)
        else:
            out.append(extract_cashtags(text))
    return out, invalid


def _validate(raw: pd.DataFrame, *, default_source: str, now: datetime) -> pd.DataFrame:
    """Canonical rows ``line, posted_at, tickers, text, source, author, post_id, label, reason``;
    ``reason`` is None for a valid row, else why it is rejected."""
    n = len(raw)

    def col(name: str) -> pd.Series:
        if name in raw:
            return raw[name].astype(object).where(raw[name].notna(), "").astype(str).str.strip()
        return pd.Series([""] * n, index=raw.index, dtype=object)

    reason = raw["reason"].astype(object) if "reason" in raw else pd.Series([None] * n, index=raw.index, dtype=object)
    clock = col("time")
    text = col("text")
    posted = parse_post_times(clock)
    tickers, invalid = _tickers_of(col("ticker") if "ticker" in raw else None, text)
    no_ticker = np.array([not t for t in tickers]) & ~invalid
    future = (posted > pd.Timestamp(now) + FUTURE_TOLERANCE).fillna(False).to_numpy()

    def reject(mask: np.ndarray | pd.Series, why: str) -> None:
        mask = np.asarray(mask, dtype=bool)
        reason[mask & reason.isna().to_numpy()] = why

    # the first applicable reason wins: a row with no time and no text is a "missing_time" row
    reject(clock == "", "missing_time")
    reject(posted.isna(), "unparseable_time")
    reject(future, "future_time")
    reject(text == "", "empty_text")
    reject(invalid, "invalid_ticker")
    reject(no_ticker, "no_ticker")
    source = col("source").str.lower().str.slice(0, SOURCE_MAX)
    source = source.where(source != "", default_source)
    label = col("label").str.lower()
    return pd.DataFrame({
        "line": raw["line"].to_numpy(), "posted_at": posted, "tickers": tickers, "text": text,
        "source": source, "author": col("author"), "post_id": col("post_id"),
        "label": label.where(label.isin(["bullish", "bearish"]), ""), "reason": reason,
    }, index=raw.index)


def read_social_chunks(path: Path, *, source: str | None = None, limit: int | None = None,
                       chunk_rows: int = READ_CHUNK_ROWS, now: datetime | None = None) -> Iterator[pd.DataFrame]:
    """Validated chunks of a CSV, CSV.gz or JSON-lines file (see ``_validate`` for the columns)."""
    path = Path(path)
    if not path.is_file():
        raise SocialFileError(f"{path}: no such file")
    default_source = (source or DEFAULT_SOURCE).strip().lower()[:SOURCE_MAX] or DEFAULT_SOURCE
    now = now or timezone.now()
    raw_chunks = (_raw_jsonl(path, limit=limit, chunk_rows=chunk_rows) if _is_jsonl(path)
                  else _raw_csv(path, limit=limit, chunk_rows=chunk_rows))
    for raw in raw_chunks:
        yield _validate(raw.reset_index(drop=True), default_source=default_source, now=now)


# Keys ------------------------------------------------------------------------------------------------
def author_hash(*, source: str, author: str) -> str:
    """A keyed hash of the author id (32 hex characters), "" for no author."""
    if not author:
        return ""
    key = str(settings.SECRET_KEY).encode()
    return hmac.new(key, f"{source}:{author}".encode(), hashlib.sha256).hexdigest()[:32]


def post_key(*, post_id: str, author: str, posted_at: pd.Timestamp, text: str) -> str:
    """The source's post id, or ``h:`` + sha256 of (author, time, whitespace-normalized text)."""
    if post_id and len(post_id) <= POST_ID_MAX:
        return post_id
    basis = f"{post_id}|{author}|{posted_at.isoformat()}|{' '.join(text.split())}"
    return "h:" + hashlib.sha256(basis.encode("utf-8")).hexdigest()


# Storing -------------------------------------------------------------------------------------------
@dataclass
class StoreCounts:
    status: np.ndarray  # per item: "new", "existing" (stored before or a duplicate) or "unknown" (ticker)
    unknown_tickers: set[str] = field(default_factory=set)

    @property
    def inserted(self) -> int:
        return int((self.status == "new").sum())

    @property
    def existing(self) -> int:
        return int((self.status == "existing").sum())


def store_posts(*, items: pd.DataFrame, provider: str) -> StoreCounts:
    """Insert the new (post, ticker) items; ``items`` has ``ticker, posted_at (aware), text, source,
    author (hashed), post_key, label``. Items of tickers not in the database are not stored
    (``unknown``). Each new post's text is scored once, whatever its number of tickers."""
    n = len(items)
    status = np.full(n, "existing", dtype=object)
    counts = StoreCounts(status=status)
    if n == 0:
        return counts
    items = items.reset_index(drop=True)
    symbols = sorted(set(items["ticker"]))
    ids: dict[str, int] = {}
    for start in range(0, len(symbols), 500):
        ids.update(Ticker.objects.filter(symbol__in=symbols[start : start + 500]).values_list("symbol", "id"))
    ticker_id = items["ticker"].map(ids)
    unknown = ticker_id.isna().to_numpy()
    status[unknown] = "unknown"
    counts.unknown_tickers = set(items.loc[unknown, "ticker"])
    known = items.loc[~unknown].assign(ticker_id=ticker_id[~unknown].astype("int64"))
    if known.empty:
        return counts
    first = ~known.duplicated(["source", "post_key", "ticker_id"]).to_numpy()
    existing: set[tuple[str, str, int]] = set()
    keys = sorted(set(known["post_key"]))
    for start in range(0, len(keys), 900):
        existing.update(SocialPost.objects.filter(post_key__in=keys[start : start + 900])
                        .values_list("source", "post_key", "ticker_id"))
    stored = np.array([(s, k, int(t)) in existing for s, k, t in
                       zip(known["source"], known["post_key"], known["ticker_id"], strict=True)], dtype=bool)
    new_mask = first & ~stored
    status[known.index[new_mask]] = "new"
    new = known.loc[new_mask]
    if new.empty:
        return counts
    texts = new.drop_duplicates(["source", "post_key"])
    score_of = dict(zip(zip(texts["source"], texts["post_key"], strict=True), score_posts(texts["text"].tolist()),
                        strict=True))
    rows = [
        SocialPost(ticker_id=int(r.ticker_id), source=r.source, post_key=r.post_key,
                   posted_at=r.posted_at.to_pydatetime(), text=r.text, author=r.author,
                   author_label=r.label, sentiment=float(score_of[(r.source, r.post_key)]), provider=provider)
        for r in new.itertuples(index=False)
    ]
    with transaction.atomic():
        SocialPost.objects.bulk_create(rows, batch_size=BATCH_SIZE, ignore_conflicts=True)
    return counts


# File ingestion ------------------------------------------------------------------------------------
@dataclass
class SocialIngestSummary(FileIngestSummary):
    """rows_loaded: rows that stored at least one new (post, ticker); rows_unchanged: rows whose every
    (post, ticker) was stored already or duplicated."""

    posts_loaded: int = 0  # new (post, ticker) rows stored
    first_post: str | None = None
    last_post: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "posts_loaded": self.posts_loaded, "first_post": self.first_post,
                "last_post": self.last_post}


def _pairs(valid: pd.DataFrame) -> pd.DataFrame:
    """Valid rows -> one item per (row, ticker) with the store's columns and ``row`` (the row's index)."""
    exploded = valid.assign(row=valid.index).explode("tickers").rename(columns={"tickers": "ticker"})
    authors = {a: author_hash(source=s, author=a) for s, a in set(zip(valid["source"], valid["author"], strict=True))}
    exploded["author"] = exploded["author"].map(authors).fillna("")
    exploded["post_key"] = [post_key(post_id=p, author=a, posted_at=t, text=x) for p, a, t, x in
                            zip(exploded["post_id"], exploded["author"], exploded["posted_at"], exploded["text"],
                                strict=True)]
    return exploded[["row", "ticker", "posted_at", "text", "source", "author", "post_key", "label"]]


def ingest_social_file(*, path: Path, source: str | None = None, limit: int | None = None,
                       progress: Progress | None = None, now: datetime | None = None) -> SocialIngestSummary:
    """Load a posts file (CSV, CSV.gz or JSON lines), recording an IngestionRun. Each chunk is stored
    in its own transaction; a rerun of the same file stores nothing new."""
    started = time.perf_counter()
    path = Path(path)
    if not path.is_file():
        raise SocialFileError(f"{path}: no such file")
    run = IngestionRun.objects.create(kind=IngestionRun.Kind.SOCIAL, source=source or "file", file=str(path))
    summary = SocialIngestSummary(ingestion_run=run.id)
    rejected_rows: list[dict[str, Any]] = []
    unknown: set[str] = set()
    tickers: set[str] = set()
    days: set[date] = set()
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None
    with failure_recorded(run, started=started):
        for chunk in read_social_chunks(path, source=source, limit=limit, now=now):
            summary.rows_read += len(chunk)
            valid = chunk[chunk["reason"].isna()]
            pairs = _pairs(valid) if len(valid) else pd.DataFrame(columns=["row", "ticker"])
            counts = store_posts(items=pairs.drop(columns="row"), provider="file")
            outcome = pd.DataFrame({"row": pairs["row"].to_numpy(), "status": counts.status})
            per_row = outcome.groupby("row")["status"].agg(lambda s: "new" if (s == "new").any() else
                                                          "existing" if (s == "existing").any() else "unknown")
            chunk.loc[per_row.index[per_row == "unknown"], "reason"] = "unknown_ticker"
            summary.rows_loaded += int((per_row == "new").sum())
            summary.rows_unchanged += int((per_row == "existing").sum())
            summary.posts_loaded += counts.inserted
            unknown |= counts.unknown_tickers
            bad = chunk["reason"].notna()
            summary.count_rejected(chunk.loc[bad, "reason"].value_counts())
            for row in chunk.loc[bad].head(MAX_REJECTED_ROWS_STORED - len(rejected_rows)).itertuples():
                rejected_rows.append({"line": int(row.line), "ticker": " ".join(row.tickers or []) if
                                      isinstance(row.tickers, list) else "", "reason": row.reason})
            stored = pairs.loc[counts.status != "unknown"] if len(pairs) else pairs
            if len(stored):
                tickers |= set(stored["ticker"])
                days |= set(stored["posted_at"].dt.tz_convert(MARKET_TZ).dt.date)
                lo, hi = stored["posted_at"].min(), stored["posted_at"].max()
                first = lo if first is None or lo < first else first
                last = hi if last is None or hi > last else last
            say(progress, f"{path.name}: {summary.rows_read:,} rows read, {summary.posts_loaded:,} new posts")
    summary.tickers, summary.days = len(tickers), len(days)
    summary.first_post = first.isoformat() if first is not None else None
    summary.last_post = last.isoformat() if last is not None else None
    file_run_succeeded(run, summary=summary, rejected_rows=rejected_rows, unknown=unknown,
                       unknown_hint="ingest their prices first", started=started)
    return summary


# Provider updates ------------------------------------------------------------------------------------
class SocialUpdateSummary(TickerUpdateSummary):
    NOUN = "posts"
    posts_read = property(lambda self: self.read)
    posts_added = property(lambda self: self.added)
    posts_unchanged = property(lambda self: self.unchanged)


def social_provider_name() -> str:
    """``ML_SOCIAL_PROVIDER`` (empty: no social fetching)."""
    return str(getattr(settings, PROVIDER_SETTING, "") or "").strip().lower()


def update_social(*, provider: str | None = None, tickers: list[str] | None = None, max_pages: int | None = None,
                  progress: Progress | None = None) -> SocialUpdateSummary:
    """Fetch each ticker's posts newer than the newest stored one of ``provider`` (default
    ``ML_SOCIAL_PROVIDER``), score and store them. One to ``max_pages`` requests per ticker
    (``ML_SOCIAL_MAX_PAGES``), rate-limited, budgeted and metered like the price updates; ``tickers``
    default to the active ones. One ticker's failure does not stop the others."""
    started = time.perf_counter()
    key = (provider or social_provider_name()).strip().lower()
    cls = SOCIAL_PROVIDERS.get(key)
    if cls is None:
        raise ValueError(f"unknown social provider {key!r} (known: {', '.join(sorted(SOCIAL_PROVIDERS))}); "
                         f"set {PROVIDER_SETTING} to one of them, or leave it empty to fetch no posts")
    pages = int(max_pages if max_pages is not None else getattr(settings, "ML_SOCIAL_MAX_PAGES", 5))
    symbols = requested_tickers(tickers)
    metered = MeteredProvider(cls, key=key, day=timezone.localdate())
    # the provider's post ids are numbers that grow with time: the newest stored one is where to resume
    newest = newest_by_ticker(SocialPost.objects.filter(provider=key), symbols=symbols,
                              newest=Max(Cast("post_key", BigIntegerField())))

    def fetch(symbol: str) -> pd.DataFrame:
        return metered.source.fetch_posts(symbol, since_id=newest.get(symbol), max_pages=pages)

    def store(symbol: str, frame: pd.DataFrame) -> StoreCounts:
        items = pd.DataFrame({
            "ticker": symbol, "posted_at": frame["created_at"], "text": frame["body"], "source": key,
            "author": [author_hash(source=key, author=a) for a in frame["author"]],
            "post_key": frame["post_id"].astype(str), "label": frame["label"],
        })
        return store_posts(items=items, provider=key)

    summary = update_each_ticker(kind=IngestionRun.Kind.SOCIAL, summary=SocialUpdateSummary(provider=key),
                                 provider=metered, symbols=symbols, fetch=fetch, store=store, started=started,
                                 progress=progress)
    say(progress, f"{key} posts: {summary.posts_added} new for {summary.tickers_updated} tickers, "
        f"{summary.calls} calls")
    return summary


def update_social_if_configured(*, tickers: list[str] | None = None,
                                progress: Progress | None = None) -> dict[str, Any] | None:
    """The daily pipeline's social step: ``update_social`` when ``ML_SOCIAL_PROVIDER`` is set (its
    counts), None when it is not (the default: nothing leaves the machine)."""
    if not social_provider_name():
        return None
    summary = update_social(tickers=tickers, progress=progress)
    out = summary.as_dict()
    out["failed"] = len(summary.failed)
    out["skipped"] = len(summary.skipped)
    return out


# Reads for the feature store ---------------------------------------------------------------------------
def social_posts_frame(*, ticker_ids: list[int], symbols: dict[int, str], since: date | None = None,
                       end: date | None = None) -> pd.DataFrame:
    """Stored posts of ``ticker_ids`` as ``ticker, posted_at (UTC), score, label`` (what
    ``features.social.aggregate_social_daily`` takes). Posts from a week before ``since`` (weekends,
    holidays and after-close posts land on later days) to two days after ``end``."""
    qs = SocialPost.objects.filter(ticker_id__in=ticker_ids).order_by()
    if since is not None:
        qs = qs.filter(posted_at__gte=datetime.combine(since - timedelta(days=7), datetime.min.time(), tzinfo=UTC))
    if end is not None:
        qs = qs.filter(posted_at__lt=datetime.combine(end + timedelta(days=2), datetime.min.time(), tzinfo=UTC))
    rows = list(qs.values_list("ticker_id", "posted_at", "sentiment", "author_label").iterator(chunk_size=20_000))
    frame = pd.DataFrame(rows, columns=["ticker_id", "posted_at", "score", "label"])
    frame.insert(0, "ticker", frame.pop("ticker_id").map(symbols))
    frame["posted_at"] = pd.to_datetime(frame["posted_at"], utc=True)
    return frame
