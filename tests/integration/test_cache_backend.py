"""The cache (embedded disk cache or Redis) stores JSON, never pickles, and counts atomically."""

import pytest
from django.core.cache import cache


def test_values_round_trip_as_json_and_counters_increment():
    cache.set("t:json", {"date": "2024-01-02", "values": [1.5, None]})
    assert cache.get("t:json") == {"date": "2024-01-02", "values": [1.5, None]}
    cache.add("t:count", 0)
    cache.incr("t:count", 3)
    cache.incr("t:count")
    assert cache.get("t:count") == 4
    cache.delete_many(["t:json", "t:count"])


def test_objects_that_only_pickle_could_store_are_refused():
    class Opaque:
        pass

    with pytest.raises(TypeError):
        cache.set("t:object", Opaque())


def test_remembered_key_encoding_is_diskcaches_own(tmp_path):
    """Entries written before the key encoding was remembered are still found: the same bytes, the
    same shard."""
    from diskcache import FanoutCache, JSONDisk

    from investml.cache_serializers import JSONCounterDisk

    plain, remembered = JSONDisk(str(tmp_path)), JSONCounterDisk(str(tmp_path))
    for key in ("auth:credentials-version", "online:AAPL:" + "x" * 300, "ünïcode", ""):
        for _ in range(2):  # the first call encodes, the second is remembered
            assert bytes(remembered.put(key)[0]) == bytes(plain.put(key)[0])
            assert remembered.put(key)[1] == plain.put(key)[1] and remembered.hash(key) == plain.hash(key)
    FanoutCache(str(tmp_path / "c"), shards=4, disk=JSONDisk).set("online:MSFT", [1.5, 2])
    assert FanoutCache(str(tmp_path / "c"), shards=4, disk=JSONCounterDisk).get("online:MSFT") == [1.5, 2]
