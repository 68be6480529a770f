"""The online store: each ticker's latest stored feature vector in the Django cache, with the index
and the pointer the API's readers (``features.selectors``) follow."""

from __future__ import annotations

import json
from collections.abc import Iterable

from django.core.cache import cache
from django.utils import timezone

from features.models import FeatureSetVersion
from features.selectors import (
    feature_store_for,
    online_columns_key,
    online_current_key,
    online_index_key,
    online_payload,
)
from features.versioning import content_hash

READ_ATTEMPTS = 5


def _columns_hash(columns: list[str]) -> str:
    return content_hash({"columns": list(columns)})


def publish_online_features(*, version: FeatureSetVersion, tickers: Iterable[str] | None = None) -> int:
    """Write the latest stored vector of each ticker to the cache and point the feature set's
    index at ``version``. Returns the number of vectors written.

    Keys: ``features:online:<version id>:<TICKER>`` -> JSON {date, values, columns_hash, version...};
    ``features:online:index:<set>`` -> JSON {version, columns, tickers...};
    ``features:online:current:<set>`` -> the version id. Vectors go first, then the pointer, so a
    reader never follows the pointer to a version without vectors.
    """
    store = feature_store_for(version=version)
    for attempt in range(1, READ_ATTEMPTS + 1):
        manifest = store.manifest()
        try:
            frame = store.latest_rows(tickers=tickers, manifest=manifest)
            break
        except FileNotFoundError:
            # Another build (a parallel chunk of the same run) committed after we read the manifest
            # and deleted the month files it superseded: read again from its manifest.
            if attempt == READ_ATTEMPTS:
                raise
    columns = version.feature_names
    chash = _columns_hash(columns)
    name = version.feature_set.name
    payload = online_payload(version=version, frame=frame)
    for start in range(0, len(payload), 1_000):
        keys = list(payload)[start : start + 1_000]
        cache.set_many({k: payload[k] for k in keys}, timeout=None)
    index = {
        "feature_set": name, "version_id": version.pk, "version": version.version, "columns": columns,
        "columns_hash": chash, "tickers": sorted(manifest["last_dates"]),
        "updated_at": timezone.now().isoformat(timespec="seconds"),
    }
    cache.set_many(
        {
            online_columns_key(version.pk): json.dumps(columns),
            online_index_key(name): json.dumps(index, separators=(",", ":")),
        },
        timeout=None,
    )
    cache.set(online_current_key(name), str(version.pk), timeout=None)
    return len(payload)
