"""Pipeline admission: a patient frees its admission place once its transfers are done.

The transfer budget is the bottleneck; what comes after the download (TaskTracker, conversions,
report) does not spend it. Holding an admission place for a whole flow would leave the budget idle
while admitted patients convert; so the runner lets the next patient in as soon as one has
stored its archive, and caps the total in flight separately, for memory.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

_lock = threading.Lock()
_waiting: dict[str, tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = {}


def on_transfers_done(patient_id: str, callback: Callable[[], None]) -> None:
    """Call `callback` (on the current loop) when the patient's transfers are done in this process."""
    with _lock:
        _waiting[patient_id] = (asyncio.get_running_loop(), callback)


def forget(patient_id: str) -> None:
    with _lock:
        _waiting.pop(patient_id, None)


def transfers_done(patient_id: str) -> None:
    """The patient spends no more transfer budget (its archive is stored); a no-op outside a runner."""
    with _lock:
        entry = _waiting.pop(patient_id, None)
    if entry is not None:
        loop, callback = entry
        loop.call_soon_threadsafe(callback)
