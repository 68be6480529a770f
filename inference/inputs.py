"""Reads that turn a request into model input frames (the read side of inference: selectors).

Every learner takes a DataFrame with ``ticker``, ``date`` and the columns it needs (see
``training.learners``). A *source* builds those frames for a list of rows:

* :class:`VectorSource`: feature vectors sent in the request; each row is its own one-day history
  (an LSTM sees it as a sequence left-padded with zeros, i.e. the training mean: the learner's own
  rule for a ticker with no earlier history).
* :class:`OnlineSource`: tickers, read from the online feature store (``get_online_features_many``,
  one cache round trip per feature-set version) with the adjusted close of the feature date from
  the price table; for a sequence model, the ``sequence_length - 1`` earlier rows come from the
  offline store and are cached per (feature-set version, ticker, feature date) in this process.
* :class:`OfflineSource`: the whole universe on one date from the offline store (daily batch).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from features.models import PriceBar, Ticker
from features.selectors import feature_store_for, get_online_features_many, resolve_feature_set_version
from inference import conf
from inference.exceptions import ModelUnavailable, NotFound

_VECTOR_DATE = pd.Timestamp("2000-01-03")


def lookback_days(length: int) -> int:
    """Calendar days that hold ``length`` trading days, with room for holidays and gaps."""
    return int(length * 1.6) + 14


def ticker_exists(symbol: str) -> bool:
    return Ticker.objects.filter(symbol=symbol).exists()


_PRICES: OrderedDict[tuple[str, date], float] = OrderedDict()
_PRICES_LOCK = threading.Lock()
_PRICES_SIZE = 20_000


def prices_on(keys: Sequence[tuple[str, date]]) -> dict[tuple[str, date], float]:
    """Adjusted close of each (ticker, date) that has a bar (one query for those not seen before in
    this process; a stored day's close does not change)."""
    out: dict[tuple[str, date], float] = {}
    with _PRICES_LOCK:
        for key in keys:
            if key in _PRICES:
                out[key] = _PRICES[key]
    todo = [key for key in keys if key not in out]
    if not todo:
        return out
    symbols = sorted({t for t, _ in todo})
    dates = sorted({d for _, d in todo})
    rows = PriceBar.objects.filter(ticker__symbol__in=symbols, date__in=dates).values_list(
        "ticker__symbol", "date", "adj_close"
    )
    wanted = set(todo)
    found = {(t, d): float(p) for t, d, p in rows if (t, d) in wanted}
    with _PRICES_LOCK:
        _PRICES.update(found)
        while len(_PRICES) > _PRICES_SIZE:
            _PRICES.popitem(last=False)
    out.update(found)
    return out


def clear_caches() -> None:
    """Forget the per-process sequence and price caches (tests)."""
    SEQUENCES.clear()
    with _PRICES_LOCK:
        _PRICES.clear()


def feature_set_version(version_id: int | None) -> Any:
    return resolve_feature_set_version(version=version_id)


# --------------------------------------------------------------------------------------------------


class _SequenceCache:
    """Per-process LRU of context rows: (fsv id, ticker, feature date, length) -> (dates, values)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def get(self, key: tuple) -> tuple[np.ndarray, np.ndarray] | None:
        with self._lock:
            found = self._data.get(key)
            if found is not None:
                self._data.move_to_end(key)
            return found

    def put(self, key: tuple, value: tuple[np.ndarray, np.ndarray]) -> None:
        size = conf.sequence_cache_size()
        if size <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


SEQUENCES = _SequenceCache()


class Source:
    """Rows to score, in request order (``tickers``)."""

    tickers: list[str]

    def latest(self, fsv_id: int | None, columns: list[str]) -> pd.DataFrame:
        """One row per ticker: ``ticker, date, <columns>, adj_close``."""
        raise NotImplementedError

    def history(self, fsv_id: int | None, columns: list[str], length: int) -> tuple[pd.DataFrame, np.ndarray]:
        """Each ticker's last ``length`` rows (fewer when it has less history) and the positions of
        each ticker's latest row, in ticker order."""
        raise NotImplementedError


class VectorSource(Source):
    def __init__(self, vectors: np.ndarray, columns: list[str], *, reference_prices: Sequence[float | None]):
        self.vectors = vectors
        self.columns = columns
        self.tickers = [f"~{i}" for i in range(len(vectors))]  # every row its own history
        self.reference_prices = list(reference_prices)

    def latest(self, fsv_id: int | None, columns: list[str]) -> pd.DataFrame:
        frame = pd.DataFrame(self.vectors, columns=self.columns, copy=False)
        frame["ticker"] = self.tickers
        frame["date"] = _VECTOR_DATE
        frame["adj_close"] = np.asarray(
            [np.nan if p is None else p for p in self.reference_prices], dtype=np.float64
        )
        return frame

    def history(self, fsv_id: int | None, columns: list[str], length: int) -> tuple[pd.DataFrame, np.ndarray]:
        return self.latest(fsv_id, columns), np.arange(len(self.vectors))


class OnlineSource(Source):
    """Tickers from the online store; ``field`` names them in errors (``ticker`` or ``instances``)."""

    def __init__(self, tickers: list[str], *, field: str):
        self.tickers = tickers
        self.field = field
        self._latest: dict[int | None, pd.DataFrame] = {}
        self._vectors: dict[int | None, list[Any]] = {}
        self._prices: dict[tuple[str, date], float] | None = None

    def _where(self, index: int) -> str:
        return self.field if self.field == "ticker" else f"{self.field}[{index}]"

    def _missing(self, index: int, symbol: str, version: Any) -> NotFound:
        if not ticker_exists(symbol):
            return NotFound(f"unknown ticker {symbol!r}", field=self._where(index))
        where = f"feature set version {version}" if version else "the online feature store"
        return NotFound(
            f"no online features for ticker {symbol!r} in {where} (run: python manage.py build_features)",
            field=self._where(index),
        )

    def vectors(self, fsv_id: int | None) -> list[Any]:
        """The tickers' latest online vectors (one cache round trip per feature-set version)."""
        if fsv_id not in self._vectors:
            found = get_online_features_many(tickers=self.tickers, version=fsv_id)
            for i, symbol in enumerate(self.tickers):
                if symbol not in found:
                    raise self._missing(i, symbol, fsv_id)
            self._vectors[fsv_id] = [found[s] for s in self.tickers]
        return self._vectors[fsv_id]

    def feature_dates(self, fsv_id: int | None) -> list[date]:
        return [vec.date for vec in self.vectors(fsv_id)]

    def reference_prices(self, fsv_id: int | None) -> list[float | None]:
        """Each ticker's adjusted close on its feature date (None where no bar)."""
        dates = self.feature_dates(fsv_id)
        prices = self.prices(dates)
        out = [prices.get((s, d)) for s, d in zip(self.tickers, dates, strict=True)]
        return [p if p is not None and math.isfinite(p) else None for p in out]

    def latest(self, fsv_id: int | None, columns: list[str]) -> pd.DataFrame:
        if fsv_id in self._latest:
            return self._latest[fsv_id]
        vectors = self.vectors(fsv_id)
        all_columns = vectors[0].columns
        values = np.array(
            [[np.nan if v is None else v for v in vec.values] for vec in vectors], dtype=np.float64
        ).reshape(len(vectors), len(all_columns))
        frame = pd.DataFrame(values, columns=all_columns, copy=False)
        frame["ticker"] = self.tickers
        frame["date"] = pd.to_datetime(self.feature_dates(fsv_id))
        frame["adj_close"] = np.asarray(
            [np.nan if p is None else p for p in self.reference_prices(fsv_id)], dtype=np.float64
        )
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ModelUnavailable(
                f"the online feature store lacks columns the model needs: {missing[:5]} (rebuild features)"
            )
        self._latest[fsv_id] = frame
        return frame

    def prices(self, dates: list[date]) -> dict[tuple[str, date], float]:
        if self._prices is None:
            self._prices = prices_on(list(zip(self.tickers, dates, strict=True)))
        return self._prices

    def history(self, fsv_id: int | None, columns: list[str], length: int) -> tuple[pd.DataFrame, np.ndarray]:
        latest = self.latest(fsv_id, columns)
        all_columns = [c for c in latest.columns if c not in ("ticker", "date", "adj_close")]
        context = max(length - 1, 0)
        dates = [d.date() for d in pd.to_datetime(latest["date"])]
        keys = [(fsv_id, s, d, context) for s, d in zip(self.tickers, dates, strict=True)]
        rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        todo = []
        for key in keys:
            found = SEQUENCES.get(key) if context else (np.empty(0, "datetime64[ns]"), np.empty((0, len(all_columns))))
            if found is None:
                todo.append(key)
            else:
                rows[key[1]] = found
        if todo:
            rows.update(self._read_context(fsv_id, todo, all_columns, context))
        parts_values, parts_tickers, parts_dates, positions = [], [], [], []
        offset = 0
        latest_values = latest[all_columns].to_numpy(dtype=np.float64)
        for i, symbol in enumerate(self.tickers):
            ctx_dates, ctx_values = rows[symbol]
            n = len(ctx_dates)
            parts_values.append(ctx_values)
            parts_values.append(latest_values[i : i + 1])
            parts_tickers.extend([symbol] * (n + 1))
            parts_dates.append(ctx_dates)
            parts_dates.append(np.asarray([np.datetime64(dates[i], "ns")]))
            offset += n + 1
            positions.append(offset - 1)
        frame = pd.DataFrame(np.vstack(parts_values), columns=all_columns, copy=False)
        frame["ticker"] = parts_tickers
        frame["date"] = np.concatenate(parts_dates).astype("datetime64[ns]")
        return frame, np.asarray(positions, dtype=np.int64)

    def _read_context(self, fsv_id: int | None, keys: list[tuple], columns: list[str],
                      context: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        version = feature_set_version(fsv_id)
        store = feature_store_for(version=version)
        symbols = sorted({k[1] for k in keys})
        last = max(k[2] for k in keys)
        first = min(k[2] for k in keys)
        frame = store.read(
            "features", columns=columns, start=first - timedelta(days=lookback_days(context)),
            end=last, tickers=symbols,
        )
        out = {}
        by_ticker = {t: g for t, g in frame.groupby("ticker", sort=False)} if len(frame) else {}
        for key in keys:
            _, symbol, feature_day, _ = key
            rows = by_ticker.get(symbol)
            if rows is None:
                value = (np.empty(0, "datetime64[ns]"), np.empty((0, len(columns))))
            else:
                day = np.datetime64(feature_day, "ns")
                rows = rows.loc[rows["date"].to_numpy() < day].tail(context)
                value = (rows["date"].to_numpy().astype("datetime64[ns]"), rows[columns].to_numpy(dtype=np.float64))
            SEQUENCES.put(key, value)
            out[symbol] = value
        return out


class OfflineSource(Source):
    """The universe's rows on ``as_of`` (and their history) from the offline store."""

    def __init__(self, *, as_of: date, tickers: list[str], frames: dict[int | None, pd.DataFrame]):
        self.as_of = as_of
        self.tickers = tickers
        self.frames = frames  # fsv id -> ticker, date, features, adj_close from as_of - lookback to as_of

    def _frame(self, fsv_id: int | None) -> pd.DataFrame:
        return self.frames[fsv_id]

    def latest(self, fsv_id: int | None, columns: list[str]) -> pd.DataFrame:
        frame = self._frame(fsv_id)
        today = frame.loc[frame["date"].to_numpy() == np.datetime64(self.as_of, "ns")]
        today = today.drop_duplicates("ticker", keep="last").set_index("ticker")
        out = today.reindex(self.tickers)
        out["ticker"] = self.tickers
        out["date"] = pd.Timestamp(self.as_of)
        return out.reset_index(drop=True)

    def history(self, fsv_id: int | None, columns: list[str], length: int) -> tuple[pd.DataFrame, np.ndarray]:
        frame = self._frame(fsv_id)
        frame = frame.loc[frame["ticker"].isin(self.tickers)]
        frame = frame.sort_values(["ticker", "date"], kind="stable")
        frame = frame.groupby("ticker", sort=False).tail(max(length, 1)).reset_index(drop=True)
        today = frame["date"].to_numpy() == np.datetime64(self.as_of, "ns")
        position = dict(zip(frame["ticker"].to_numpy()[today], np.flatnonzero(today), strict=True))
        return frame, np.asarray([position.get(t, -1) for t in self.tickers], dtype=np.int64)
