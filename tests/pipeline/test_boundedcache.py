"""The bounded caches a process keeps (model geometries, batch runners): LRU order, a stale
value made again, one make for concurrent callers, the old value freed before the new is made.
"""

from __future__ import annotations

import threading
import weakref

import pytest

from segpipe.pipeline import batches, plan
from segpipe.pipeline.boundedcache import BoundedCache


class Value:
    def __init__(self, key: str) -> None:
        self.key = key


def test_the_least_recently_used_entry_goes_first():
    cache: BoundedCache[str, Value] = BoundedCache(2, "test")
    made: list[str] = []

    def get(key: str) -> Value:
        return cache.get_or_make(key, lambda: made.append(key) or Value(key))

    a = get("a")
    get("b")
    assert get("a") is a  # used again: "b" is now the oldest
    get("c")
    assert "a" in cache and "c" in cache and "b" not in cache and len(cache) == 2
    get("b")
    assert made == ["a", "b", "c", "b"]


def test_an_unusable_value_is_made_again():
    cache: BoundedCache[str, Value] = BoundedCache(1, "test")
    first = cache.get_or_make("k", lambda: Value("1"))
    assert cache.get_or_make("k", lambda: Value("2"), lambda v: v.key == "1") is first
    second = cache.get_or_make("k", lambda: Value("2"), lambda v: v.key == "2")
    assert second is not first and second.key == "2" and len(cache) == 1


def test_the_old_value_is_dropped_before_the_new_one_is_made():
    cache: BoundedCache[str, Value] = BoundedCache(1, "test")
    old = weakref.ref(cache.get_or_make("a", lambda: Value("a")))
    alive_while_making = []
    cache.get_or_make("b", lambda: alive_while_making.append(old() is not None) or Value("b"))
    assert alive_while_making == [False]


def test_concurrent_callers_make_a_missing_value_once():
    cache: BoundedCache[str, Value] = BoundedCache(4, "test")
    made, start = [], threading.Barrier(8)

    def make() -> Value:
        made.append(1)
        return Value("k")

    def worker(out: list) -> None:
        start.wait()
        out.append(cache.get_or_make("k", make))

    got: list[Value] = []
    threads = [threading.Thread(target=worker, args=(got,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and len(got) == 8 and all(v is got[0] for v in got)


def test_a_cache_needs_room():
    with pytest.raises(ValueError, match="one entry"):
        BoundedCache(0, "test")


def test_the_process_caches_are_bounded():
    assert isinstance(plan._GEOMETRIES, BoundedCache) and plan._GEOMETRIES.size == 8
    assert isinstance(batches._RUNNERS, BoundedCache) and batches._RUNNERS.size == 1
