"""A small, thread-safe, least-recently-used cache for what a process keeps between runs.

A segpipe process (the driver, a Dask worker, a notebook using :mod:`segpipe`) runs many inputs
with few models: the model's probed geometry (:func:`segpipe.pipeline.plan.probe_cached`) and
the batch runner that remembers which batch size fitted (:func:`segpipe.pipeline.batches.
runner_for`) are worth keeping from one input or block to the next, but a long-lived worker or
``segpipe serve`` meets new models over days, so each cache holds a fixed number of entries and
drops the least recently used. The owner is the module that creates the cache, the lifetime
the process's; :meth:`BoundedCache.clear` empties it (tests do, between cases).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["BoundedCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _always(value: object) -> bool:
    return True


class BoundedCache(Generic[K, V]):
    """At most ``size`` values by key; the least recently used goes first when it is full.

    ``name`` says what the cache holds, for its repr. One lock guards it, and a value is made
    under that lock: two threads asking for the same missing key make it once. Entries are
    dropped before a new value is made, so a cache of one entry (a model's batch runner) frees
    the old value before the new one is built.
    """

    def __init__(self, size: int, name: str) -> None:
        if size < 1:
            raise ValueError(f"a cache needs room for one entry at least, not {size}")
        self.size = size
        self.name = name
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_make(self, key: K, make: Callable[[], V],
                    usable: Callable[[V], bool] = _always) -> V:
        """The value of ``key``; made by ``make()`` when missing or not ``usable`` any more."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None and usable(value):
                self._entries.move_to_end(key)
                return value
            self._entries.pop(key, None)
            while len(self._entries) >= self.size:  # room first: the old value is freed
                self._entries.popitem(last=False)   # before the new one takes memory
            value = self._entries[key] = make()
            return value

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __repr__(self) -> str:
        return f"BoundedCache({self.name!r}, {len(self)} of {self.size})"
