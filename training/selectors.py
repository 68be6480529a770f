"""Reads for training: the training frame (through the feature store) and training runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pandas as pd
from django.db.models import Count, Max, QuerySet

from features import selectors as feature_selectors
from features.models import FeatureSetVersion, PriceBar
from training.models import TrainingRun

TRADING_DAYS_PER_YEAR = 252


class NoTrainingData(LookupError):
    """The feature store returned no rows for the requested tickers and window."""


@dataclass
class TrainingData:
    frame: pd.DataFrame
    feature_columns: list[str]
    feature_set_version: Any  # features.FeatureSetVersion, or None when the store has no versions


def latest_bar_date(*, tickers: list[str] | None = None) -> date | None:
    qs = PriceBar.objects.all()
    if tickers:
        qs = qs.filter(ticker__symbol__in=tickers)
    return qs.aggregate(last=Max("date"))["last"]


def load_training_frame(
    *,
    tickers: list[str] | None = None,
    start: date | None = None,
    end: date | None = None,
    horizon: int = 5,
    feature_set_version: Any = None,
    train_years: float | None = None,
) -> TrainingData:
    """Features and labels per (ticker, date) from the feature store's offline store.

    ``feature_set_version`` defaults to the latest built version of the default feature set.
    ``start`` defaults to ``train_years`` before ``end`` (which defaults to the newest bar). Labels
    ``fwd_ret_1``/``fwd_dir_1`` and ``fwd_ret_{horizon}``/``fwd_dir_{horizon}`` come with the
    features; rows are sorted by (ticker, date) and tickers are plain strings.
    """
    try:
        version = feature_selectors.resolve_feature_set_version(version=feature_set_version)
    except FeatureSetVersion.DoesNotExist as exc:
        raise NoTrainingData(str(exc)) from exc
    if start is None and train_years:
        last = end or latest_bar_date(tickers=tickers)
        if last is None:
            raise NoTrainingData("no price bars in the database")
        start = last - timedelta(days=int(round(float(train_years) * 365.25)))
    horizons = tuple(sorted({1, int(horizon)}))
    frame = feature_selectors.training_frame(
        feature_set_version=version, start=start, end=end, tickers=tickers, horizons=horizons
    )
    return TrainingData(frame=normalize_frame(frame), feature_columns=list(version.feature_names),
                        feature_set_version=version)


def normalize_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Plain-string tickers, datetime64 dates, sorted by (ticker, date), fresh index."""
    frame = frame.assign(
        ticker=frame["ticker"].astype(str).to_numpy(), date=pd.to_datetime(frame["date"]).to_numpy()
    )
    return frame.sort_values(["ticker", "date"], kind="stable").reset_index(drop=True)


def recent_runs(*, limit: int = 10) -> QuerySet[TrainingRun]:
    return TrainingRun.objects.prefetch_related("model_versions__model").order_by("-created_at", "-id")[:limit]


def get_run(*, run_id: int) -> TrainingRun:
    return TrainingRun.objects.get(pk=run_id)


def tickers_with_history(*, start: date | None = None, end: date | None = None, limit: int | None = None,
                         coverage: float = 0.95) -> list[str]:
    """Tickers (by symbol) with bars on at least ``coverage`` of the window's trading dates."""
    qs = PriceBar.objects.all()
    if start:
        qs = qs.filter(date__gte=start)
    if end:
        qs = qs.filter(date__lte=end)
    dates = qs.values("date").distinct().count()
    if not dates:
        return []
    rows = (qs.values("ticker__symbol").annotate(n=Count("id")).filter(n__gte=int(coverage * dates))
            .order_by("ticker__symbol"))
    symbols = [r["ticker__symbol"] for r in rows]
    return symbols[:limit] if limit else symbols
