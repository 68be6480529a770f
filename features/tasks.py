"""Celery tasks of the features app: thin wrappers over ``features.services`` (the feature store, the
scheduled fundamentals and news refreshes)."""

from __future__ import annotations

from celery import shared_task

from features.services.data_refresh import refresh_fundamentals, refresh_news
from features.services.feature_store import build_features


@shared_task(name="features.build_features")
def build_features_task(feature_set: str | None = None, start: str | None = None, end: str | None = None,
                        tickers: list[str] | None = None, full: bool = False) -> dict:
    """One build (chunked inside), as ``manage.py build_features``; returns the build summary."""
    return build_features(feature_set=feature_set, start=start, end=end, tickers=tickers, full=full).as_dict()


@shared_task(name="features.build_features_chunk")
def build_features_chunk_task(tickers: list[str], feature_set: str | None = None,
                              start: str | None = None, end: str | None = None, full: bool = False) -> dict:
    """A build restricted to a chunk of tickers (its own materialization; commits are serialized
    by the store's lock, so chunks may run on several workers at once)."""
    return build_features(feature_set=feature_set, start=start, end=end, tickers=tickers, full=full,
                          chunk_size=max(len(tickers), 1)).as_dict()


@shared_task(name="features.refresh_fundamentals")
def refresh_fundamentals_task() -> dict:
    """The day's share of the weekly fundamentals cycle (beat, daily; ``features.services.data_refresh``)."""
    return refresh_fundamentals().as_dict()


@shared_task(name="features.update_news")
def update_news_task() -> dict:
    """The day's news when ``ML_NEWS_PROVIDER`` is set (beat, daily)."""
    return refresh_news()
