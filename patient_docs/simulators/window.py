"""Strict rolling-window request counter, as the simulated services count their budgets."""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from patient_docs.settings import Budget


class RollingWindow:
    """At most `budget.count` arrivals in any rolling `budget.window` seconds; rejected ones count too."""

    def __init__(self, budget: Budget, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget
        self.clock = clock
        self._arrivals: list[float] = []
        self._rejected = 0
        self._lock = threading.Lock()

    def _in_window(self, now: float) -> int:
        # Two arrivals share a window when they are less than `window` seconds apart.
        return len(self._arrivals) - bisect.bisect_right(self._arrivals, now - self.budget.window)

    def hit(self, now: float | None = None) -> bool:
        """Record one arrival; False when it is over the budget."""
        now = self.clock() if now is None else now
        with self._lock:
            bisect.insort(self._arrivals, now)
            allowed = self._in_window(now) <= self.budget.count
            if not allowed:
                self._rejected += 1
            return allowed

    def retry_after(self, now: float | None = None) -> int:
        """Whole seconds until one more arrival would be allowed (0 when it would be now)."""
        now = self.clock() if now is None else now
        with self._lock:
            recent = [t for t in self._arrivals if t <= now]
            if len(recent) < self.budget.count:
                return 0
            # The next arrival is allowed once the count-th most recent one has left its window.
            free_at = recent[-self.budget.count] + self.budget.window
            return max(0, math.ceil(free_at - now))

    def max_in_any_window(self) -> int:
        """The most arrivals that ever fell within one rolling window."""
        with self._lock:
            arrivals = list(self._arrivals)
        best, start = 0, 0
        for end, t in enumerate(arrivals):
            while t - arrivals[start] >= self.budget.window:
                start += 1
            best = max(best, end - start + 1)
        return best

    def stats(self) -> dict[str, Any]:
        """Budget string, arrivals, rejected and max_in_any_window."""
        with self._lock:
            arrivals, rejected = len(self._arrivals), self._rejected
        return {
            "budget": str(self.budget),
            "arrivals": arrivals,
            "rejected": rejected,
            "max_in_any_window": self.max_in_any_window(),
        }
