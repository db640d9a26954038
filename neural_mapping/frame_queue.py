"""A bounded, thread-safe, drop-oldest queue between frame producers and the trainer.

Producers (ROS callbacks, the realtime runner) must never block on the trainer: when the
queue is full the oldest item is dropped (and counted) so the newest observation always
gets in. Used by :class:`neural_mapping.online.OnlineMapper`; pure Python.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """FIFO of at most ``maxlen`` items; ``put`` on a full queue evicts the oldest.

    Attributes (read under no lock; ints are atomic enough for statistics):
      dropped: items evicted because the queue was full.
      put_count: items ever put.
      high_water: the largest length ever reached (never above ``maxlen``).
    """

    def __init__(self, maxlen: int) -> None:
        if int(maxlen) < 1:
            raise ValueError(f"queue size must be >= 1, got {maxlen}")
        self.maxlen = int(maxlen)
        self._items: deque[T] = deque()
        self._cv = threading.Condition()
        self.dropped = 0
        self.put_count = 0
        self.high_water = 0
        self._closed = False
        self._interrupted = False

    def put(self, item: T) -> T | None:
        """Append ``item``; returns the evicted oldest item when the queue was full, else None."""
        with self._cv:
            evicted = None
            if len(self._items) >= self.maxlen:
                evicted = self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self.put_count += 1
            self.high_water = max(self.high_water, len(self._items))
            self._cv.notify()
            return evicted

    def get(self, timeout: float | None = None) -> T | None:
        """Pop the oldest item; wait up to ``timeout`` s (None: forever); None if none came or closed."""
        with self._cv:
            if not self._items and not self._closed and not self._interrupted:
                self._cv.wait_for(lambda: bool(self._items) or self._closed or self._interrupted, timeout=timeout)
            self._interrupted = False
            if self._items:
                return self._items.popleft()
            return None

    def interrupt(self) -> None:
        """Make the current (or next) waiting ``get`` return now (None when the queue is empty)."""
        with self._cv:
            self._interrupted = True
            self._cv.notify_all()

    def get_nowait(self) -> T | None:
        with self._cv:
            return self._items.popleft() if self._items else None

    def clear(self) -> int:
        """Remove every item; returns how many were removed (not counted as dropped)."""
        with self._cv:
            n = len(self._items)
            self._items.clear()
            return n

    def close(self) -> None:
        """Wake every waiting ``get`` (they return None once the queue is empty)."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def __len__(self) -> int:
        with self._cv:
            return len(self._items)
