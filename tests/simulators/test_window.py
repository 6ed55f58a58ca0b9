"""The strict rolling-window counter."""

from __future__ import annotations

import threading

from patient_docs.settings import Budget
from patient_docs.simulators.window import RollingWindow


def test_allows_count_then_rejects_with_retry_after() -> None:
    window = RollingWindow(Budget(3, 10.0))
    assert [window.hit(t) for t in (0.0, 1.0, 2.0, 3.0)] == [True, True, True, False]
    # The three most recent arrivals are 1.0, 2.0 and the rejected 3.0: one more fits once 1.0 leaves at 11.0.
    assert window.retry_after(3.0) == 8
    assert not window.hit(10.9)
    assert window.hit(12.0)
    assert window.stats() == {"budget": "3/10s", "arrivals": 6, "rejected": 2, "max_in_any_window": 4}


def test_rejected_arrivals_count_against_the_window() -> None:
    window = RollingWindow(Budget(2, 10.0))
    assert window.hit(0.0) and window.hit(0.0)
    assert not window.hit(9.0)
    # 0.0 and 0.0 have left the window at 10.0, but the rejected 9.0 has not.
    assert window.hit(10.0)
    assert not window.hit(10.5)


def test_arrivals_exactly_one_window_apart_do_not_share_it() -> None:
    window = RollingWindow(Budget(1, 1.0))
    assert window.hit(5.0)
    assert not window.hit(5.999)
    assert window.retry_after(5.999) == 1
    assert window.hit(7.0)
    assert window.max_in_any_window() == 2


def test_retry_after_is_zero_when_free() -> None:
    window = RollingWindow(Budget(2, 60.0))
    window.hit(0.0)
    assert window.retry_after(0.0) == 0


def test_max_in_any_window_slides() -> None:
    window = RollingWindow(Budget(100, 1.0))
    for t in (0.0, 0.5, 0.9, 1.0, 1.2, 1.3, 1.4, 3.0):
        window.hit(t)
    assert window.max_in_any_window() == 6  # 0.5 .. 1.4


def test_threads_get_exactly_count_allowed() -> None:
    window = RollingWindow(Budget(50, 60.0))
    results: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(20):
            ok = window.hit()
            with lock:
                results.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 50
    assert window.stats()["rejected"] == 110
