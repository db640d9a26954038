import threading
import time

import pytest

from neural_mapping.frame_queue import DropOldestQueue


def test_drop_oldest_keeps_newest_in_order():
    q = DropOldestQueue(3)
    evicted = [q.put(i) for i in range(5)]
    assert evicted == [None, None, None, 0, 1]
    assert len(q) == 3 and q.dropped == 2 and q.put_count == 5 and q.high_water == 3
    assert [q.get_nowait() for _ in range(4)] == [2, 3, 4, None]


def test_get_waits_with_timeout_and_close_wakes():
    q = DropOldestQueue(2)
    t0 = time.monotonic()
    assert q.get(timeout=0.1) is None
    assert time.monotonic() - t0 >= 0.09
    out = []
    th = threading.Thread(target=lambda: out.append(q.get(timeout=10)))
    th.start()
    q.close()
    th.join(timeout=5)
    assert not th.is_alive() and out == [None]


def test_clear_is_not_counted_as_dropped():
    q = DropOldestQueue(4)
    for i in range(3):
        q.put(i)
    assert q.clear() == 3 and len(q) == 0 and q.dropped == 0


def test_bounded_under_concurrent_producers():
    q = DropOldestQueue(5)

    def produce(base):
        for i in range(2000):
            q.put(base + i)

    ths = [threading.Thread(target=produce, args=(k * 10000,)) for k in range(4)]
    for t in ths:
        t.start()
    got = 0
    while any(t.is_alive() for t in ths) or len(q):
        if q.get(timeout=0.01) is not None:
            got += 1
    for t in ths:
        t.join()
    assert q.high_water <= 5
    assert got + q.dropped == 8000


def test_size_must_be_positive():
    with pytest.raises(ValueError):
        DropOldestQueue(0)


def test_interrupt_wakes_a_waiting_get_once():
    q = DropOldestQueue(2)
    out = []
    t = threading.Thread(target=lambda: out.append((q.get(timeout=10.0), time.monotonic())))
    t0 = time.monotonic()
    t.start()
    time.sleep(0.05)
    q.interrupt()
    t.join(timeout=5.0)
    assert out and out[0][0] is None and out[0][1] - t0 < 2.0  # woke without an item, long before its timeout
    q.interrupt()  # an interrupt with nobody waiting makes the next get return at once, then it is spent
    assert q.get(timeout=5.0) is None
    t1 = time.monotonic()
    assert q.get(timeout=0.2) is None and time.monotonic() - t1 >= 0.15
    q.put(7)
    q.interrupt()
    assert q.get(timeout=1.0) == 7  # items still come first
