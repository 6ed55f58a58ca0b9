"""The backfill's live transfer-budget figure: requests of the last window over the budget."""

from __future__ import annotations

import time

from patient_docs.limits import usage
from patient_docs.settings import Budget


def test_use_counts_only_the_last_window():
    name, budget = "usage-test-limit", Budget(10, 60.0)
    for _ in range(4):
        usage.record(name)
    now = time.monotonic()
    assert usage.use(name, budget, now) == 0.4
    assert usage.use(name, Budget(2, 60.0), now) == 2.0  # over budget shows as such, never clipped
    assert usage.use(name, budget, now + 61) == 0.0  # a window later nothing counts
    assert usage.use(name, budget, now) == 0.0  # ... and what aged out is forgotten
