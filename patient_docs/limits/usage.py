"""What this process has sent per limit: the live budget use a backfill shows."""

from __future__ import annotations

import threading
import time
from collections import deque

from patient_docs.settings import Budget

_lock = threading.Lock()
_sent: dict[str, deque[float]] = {}


def record(name: str) -> None:
    """One request of limit `name` is being sent now."""
    with _lock:
        _sent.setdefault(name, deque()).append(time.monotonic())


def use(name: str, budget: Budget, now: float | None = None) -> float:
    """The share of the budget this process used in the last window (0..1)."""
    now = time.monotonic() if now is None else now
    with _lock:
        sent = _sent.setdefault(name, deque())
        while sent and sent[0] <= now - budget.window:
            sent.popleft()  # older than a window: never counted again
        return len(sent) / budget.count
