"""JSON for everything the cache stores: cached values are data, never pickled objects."""

from __future__ import annotations

import functools
import json
import sqlite3
import zlib
from typing import Any

from diskcache import Disk, DjangoCache, JSONDisk
from diskcache.core import UNKNOWN


class JSONSerializer:
    """Serializer for Django's RedisCache (OPTIONS["serializer"]). Integers stay raw for INCR."""

    def __init__(self, protocol: int | None = None) -> None:  # signature of Django's RedisSerializer
        pass

    def dumps(self, obj: Any) -> bytes | int:
        if type(obj) is int:
            return obj
        return json.dumps(obj, separators=(",", ":")).encode()

    def loads(self, data: bytes | int) -> Any:
        try:
            return int(data)
        except ValueError:
            return json.loads(data)


@functools.lru_cache(maxsize=4096)
def _encoded_key(key: str, compress_level: int) -> tuple[sqlite3.Binary, bool]:
    """``JSONDisk.put(key)`` for a string key: its JSON, zlib-compressed, as a raw blob."""
    return sqlite3.Binary(zlib.compress(json.dumps(key).encode("utf-8"), compress_level)), True


class JSONCounterDisk(JSONDisk):
    """diskcache's JSONDisk, keeping integers raw so that ``incr`` works (request counters). A string
    key's encoding (JSON, then zlib, as JSONDisk stores it) is remembered: every read encodes its key
    twice (the shard's hash, then the row's key), and the same keys (a ticker's online features, the
    credentials version) are read on every request."""

    def put(self, key):
        if type(key) is str:
            return _encoded_key(key, self.compress_level)
        return super().put(key)

    def store(self, value, read, key=UNKNOWN):
        if not read and type(value) is int:
            return Disk.store(self, value, read, key=key)
        return super().store(value, read, key=key)

    def fetch(self, mode, filename, value, read):
        if not read and type(value) is int:
            return value
        return super().fetch(mode, filename, value, read)


class PersistentDiskCache(DjangoCache):
    """Keeps its SQLite files open: Django closes caches after every request, and reopening
    the shards cost 15-25 ms per request. SQLite connections are per thread, so this is safe."""

    def close(self, **kwargs):
        pass
