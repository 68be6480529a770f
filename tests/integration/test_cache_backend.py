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
