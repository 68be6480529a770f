"""Reading and validating daily price files. Framework-free: pandas in, dataclass out.

Accepted: CSV, CSV.gz or Parquet; long format (a ticker column named ticker, symbol or Name) or one
file per ticker (ticker from the file name). Column names match case-insensitively. Raw files with
``split_coefficient``/``dividend_amount`` columns (Alpha Vantage style) are split-adjusted here and
their splits and dividends returned as corporate actions.

Every bad row is rejected with a reason; the valid rows are returned. Nothing is silently dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

PRICE_COLUMNS = ("open", "high", "low", "close")
BAR_COLUMNS = ("ticker", "date", "open", "high", "low", "close", "adj_close", "volume")

# Canonical name -> accepted spellings (already lower-cased, spaces/dashes as underscores).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "ticker": ("ticker", "symbol", "name"),
    "date": ("date", "timestamp", "datetime", "day"),
    "open": ("open",),
    "high": ("high",),
    "low": ("low",),
    "close": ("close",),
    "adj_close": ("adj_close", "adjusted_close", "adjclose", "adj_close_price"),
    "volume": ("volume", "vol"),
    "dividend_amount": ("dividend_amount", "dividend", "dividends", "divcash"),
    "split_coefficient": ("split_coefficient", "split_factor", "splitfactor", "stock_splits"),
}

# Relative slack for "high brackets open/close": sources round to a cent or to float noise.
BRACKET_TOLERANCE = 1e-6


class PriceFileError(ValueError):
    """The file as a whole cannot be read (format, missing columns, no ticker)."""


@dataclass
class ParsedPrices:
    bars: pd.DataFrame  # BAR_COLUMNS, one row per valid (ticker, date)
    rejected: pd.DataFrame  # line, ticker, date, reason
    actions: pd.DataFrame  # ticker, date, kind, value
    rows_read: int
    tickers: list[str] = field(default_factory=list)

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        if self.rejected.empty:
            return {}
        return {str(k): int(v) for k, v in self.rejected["reason"].value_counts().sort_index().items()}


def _normalize_name(name: str) -> str:
    return re.sub(r"[\s\-./]+", "_", str(name).strip().lower())


def ticker_from_filename(path: Path) -> str | None:
    """AAPL.csv, aapl.us.csv.gz, AAPL_daily.parquet, DA-AAPL-T-2021-04-21.csv -> AAPL."""
    stem = path.name
    for suffix in (".gz", ".csv", ".parquet", ".txt"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    stem = re.sub(r"[-_]\d{4}-\d{2}-\d{2}$", "", stem)  # trailing snapshot date
    match = re.fullmatch(r"(?i)(?:DA|daily)[-_](.+?)(?:[-_]T)?", stem)  # Alpha Vantage dumps
    if match:
        stem = match.group(1)
    stem = re.sub(r"(?i)[-_](daily|prices?|bars|ohlcv?)$", "", stem)
    stem = re.sub(r"(?i)\.us$", "", stem)  # Stooq naming
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9.\-]{0,14}", stem):
        return stem.upper()
    return None


def _read_raw(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            return pd.read_parquet(path)
        if name.endswith((".csv", ".csv.gz", ".txt", ".txt.gz")):
            # Strings for everything but known numerics would be slow on 1M+ rows; read natively
            # and coerce afterwards so a stray word in a number column rejects only its row.
            return pd.read_csv(path, low_memory=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise PriceFileError(f"{path}: cannot read: {exc}") from exc
    raise PriceFileError(f"{path}: unsupported file type (use .csv, .csv.gz or .parquet)")


def _rename_columns(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    normalized = {_normalize_name(c): c for c in raw.columns}
    rename: dict[str, str] = {}
    for canonical, aliases in COLUMN_ALIASES.items():
        for alias in aliases:
            if alias in normalized:
                rename[normalized[alias]] = canonical
                break
    missing = [c for c in ("date", *PRICE_COLUMNS, "volume") if c not in rename.values()]
    if missing:
        raise PriceFileError(
            f"{path}: missing required column(s) {', '.join(missing)} "
            f"(found: {', '.join(map(str, raw.columns))})"
        )
    return raw[list(rename)].rename(columns=rename)


def _numeric(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Return (values, non_numeric_mask): blanks are NaN and not flagged as non-numeric."""
    if pd.api.types.is_numeric_dtype(series):
        return series.astype("float64"), pd.Series(False, index=series.index)
    text = series.astype("string").str.strip()
    values = pd.to_numeric(text, errors="coerce")
    bad = values.isna() & text.notna() & (text != "")
    return values.astype("float64"), bad.fillna(False).astype(bool)


def parse_price_frame(raw: pd.DataFrame, *, source: Path, ticker: str | None = None,
                      today: date | None = None) -> ParsedPrices:
    """Validate one raw frame; see the module docstring. ``ticker`` overrides the file's."""
    df = _rename_columns(raw, source)
    rows_read = len(df)
    df.index = pd.RangeIndex(rows_read)
    line = df.index.to_numpy() + 2  # 1-based, after the header line

    if ticker is not None or "ticker" not in df.columns:
        ticker = ticker or ticker_from_filename(source)
        if ticker is None:
            raise PriceFileError(
                f"{source}: no ticker column (ticker, symbol or Name) and no ticker in the file name"
            )
        df["ticker"] = ticker
    tickers = df["ticker"].astype("string").str.strip().str.upper()

    dates = pd.to_datetime(df["date"].astype("string").str.strip(), errors="coerce", format="mixed")
    dates = dates.dt.tz_localize(None) if getattr(dates.dt, "tz", None) is not None else dates
    dates = dates.dt.normalize()

    reasons = pd.Series(pd.NA, index=df.index, dtype="string")

    def reject(mask: pd.Series | np.ndarray, reason: str) -> None:
        mask = pd.Series(mask, index=df.index).fillna(False).astype(bool)
        reasons.loc[mask & reasons.isna()] = reason

    reject(tickers.isna() | (tickers == ""), "missing_ticker")
    reject(dates.isna(), "unparseable_date")
    today_ts = pd.Timestamp(today or date.today())
    reject(dates > today_ts, "date_in_future")

    values: dict[str, pd.Series] = {}
    for column in (*PRICE_COLUMNS, "adj_close", "volume", "dividend_amount", "split_coefficient"):
        if column not in df.columns:
            continue
        values[column], bad = _numeric(df[column])
        reject(bad, f"non_numeric_{column}")
    prices = pd.DataFrame({c: values[c] for c in PRICE_COLUMNS})
    reject(prices.isna().any(axis=1), "missing_price")
    reject((prices <= 0).any(axis=1), "non_positive_price")
    has_adjusted_close = "adj_close" in values
    if has_adjusted_close:
        reject(values["adj_close"] <= 0, "non_positive_price")
    else:
        values["adj_close"] = values["close"].copy()
    volume = values["volume"]
    reject(volume.isna(), "missing_volume")
    reject(volume < 0, "negative_volume")
    high, low, open_, close = prices["high"], prices["low"], prices["open"], prices["close"]
    reject(high < low, "high_below_low")
    slack = high.abs() * BRACKET_TOLERANCE
    reject(
        (high + slack < np.maximum(open_, close)) | (low - slack > np.minimum(open_, close)),
        "high_low_not_bracketing",
    )
    if "split_coefficient" in values:
        reject(values["split_coefficient"] <= 0, "non_positive_split_coefficient")

    # Duplicates among otherwise valid rows: identical copies keep the first; conflicting
    # copies are all rejected, since nothing says which one is right.
    candidate = reasons.isna()
    key = pd.DataFrame({"ticker": tickers, "date": dates})
    payload = pd.concat([key, prices, values["adj_close"].rename("adj_close"), volume.rename("volume")], axis=1)
    dup_any = candidate & key.duplicated(keep=False)
    if dup_any.any():
        sub = payload[dup_any]
        conflicting_keys = sub.drop_duplicates().duplicated(["ticker", "date"], keep=False)
        conflict = sub.drop_duplicates()[conflicting_keys][["ticker", "date"]]
        flagged = key.merge(conflict.drop_duplicates().assign(_c=True), how="left", on=["ticker", "date"])["_c"]
        conflict_mask = flagged.notna().to_numpy() & dup_any.to_numpy()
        exact_extra = dup_any.to_numpy() & ~conflict_mask & payload.duplicated(keep="first").to_numpy()
        reject(conflict_mask, "duplicate_ticker_date")
        reject(exact_extra, "duplicate_ticker_date")

    valid = reasons.isna().to_numpy()
    bars = pd.DataFrame(
        {
            "ticker": tickers[valid].astype(str).to_numpy(),
            "date": dates[valid].dt.date.to_numpy(),
            "open": open_[valid].to_numpy(),
            "high": high[valid].to_numpy(),
            "low": low[valid].to_numpy(),
            "close": close[valid].to_numpy(),
            "adj_close": values["adj_close"][valid].to_numpy(),
            "volume": volume[valid].round().astype("int64").to_numpy(),
        }
    )
    actions = _empty_actions()
    if "split_coefficient" in values or "dividend_amount" in values:
        split = values.get("split_coefficient", pd.Series(1.0, index=df.index))[valid].fillna(1.0).to_numpy()
        dividend = values.get("dividend_amount", pd.Series(0.0, index=df.index))[valid].fillna(0.0).to_numpy()
        bars, actions = _apply_corporate_actions(bars, split, dividend, has_adjusted_close=has_adjusted_close)

    rejected_mask = ~valid
    rejected = pd.DataFrame(
        {
            "line": line[rejected_mask],
            "ticker": tickers[rejected_mask].fillna("").astype(str).to_numpy(),
            "date": df["date"][rejected_mask].astype("string").fillna("").to_numpy(),
            "reason": reasons[rejected_mask].astype(str).to_numpy(),
        }
    )
    bars = bars.sort_values(["ticker", "date"], kind="stable").reset_index(drop=True)
    return ParsedPrices(
        bars=bars,
        rejected=rejected,
        actions=actions,
        rows_read=rows_read,
        tickers=sorted(bars["ticker"].unique().tolist()),
    )


def _empty_actions() -> pd.DataFrame:
    return pd.DataFrame({"ticker": [], "date": [], "kind": [], "value": []})


def _apply_corporate_actions(bars: pd.DataFrame, split: np.ndarray, dividend: np.ndarray, *,
                             has_adjusted_close: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split-adjust raw OHLCV and, when the file has no adjusted close, derive it from dividends.

    A split of k on its ex-date d divides every earlier price by k and multiplies earlier volume
    by k. A dividend D on d multiplies earlier adjusted prices by (1 - D / close on the day before).
    """
    order = np.lexsort((pd.to_datetime(bars["date"]).to_numpy(), bars["ticker"].to_numpy()))
    bars = bars.iloc[order].reset_index(drop=True)
    split, dividend = split[order], dividend[order]
    tickers = bars["ticker"].to_numpy()
    close = bars["close"].to_numpy(dtype="float64")

    split_factor = np.ones(len(bars))
    div_factor = np.ones(len(bars))
    starts = np.flatnonzero(np.r_[True, tickers[1:] != tickers[:-1]])
    ends = np.r_[starts[1:], len(bars)]
    for start, end in zip(starts, ends, strict=True):
        s = split[start:end]
        # factor at t = product of split coefficients strictly after t
        after = np.cumprod(s[::-1])[::-1]
        split_factor[start:end] = np.r_[after[1:], 1.0]
        if not has_adjusted_close:
            c = close[start:end]
            d = dividend[start:end]
            prev_close = np.r_[np.nan, c[:-1]]
            with np.errstate(divide="ignore", invalid="ignore"):
                step = np.where((d > 0) & (prev_close > 0), 1.0 - d / prev_close, 1.0)
            ratio = np.cumprod(step[::-1])[::-1]
            div_factor[start:end] = np.r_[ratio[1:], 1.0]

    adjusted = bars.copy()
    for column in PRICE_COLUMNS:
        adjusted[column] = bars[column].to_numpy() / split_factor
    adjusted["volume"] = np.round(bars["volume"].to_numpy() * split_factor).astype("int64")
    if not has_adjusted_close:
        adjusted["adj_close"] = adjusted["close"].to_numpy() * div_factor

    split_rows = split != 1.0
    div_rows = dividend > 0
    actions = pd.concat(
        [
            pd.DataFrame({"ticker": tickers[split_rows], "date": bars["date"].to_numpy()[split_rows],
                          "kind": "split", "value": split[split_rows]}),
            pd.DataFrame({"ticker": tickers[div_rows], "date": bars["date"].to_numpy()[div_rows],
                          "kind": "dividend", "value": dividend[div_rows]}),
        ],
        ignore_index=True,
    )
    return adjusted, actions


def read_price_file(path: str | Path, *, ticker: str | None = None, today: date | None = None) -> ParsedPrices:
    path = Path(path)
    if not path.is_file():
        raise PriceFileError(f"{path}: no such file")
    return parse_price_frame(_read_raw(path), source=path, ticker=ticker, today=today)
