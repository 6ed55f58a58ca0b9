"""`budget_slot`: the one way a request to a limited service is sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import uuid4

from patient_docs.activity_log import activity
from patient_docs.limits import usage
from patient_docs.limits.broker import get_broker
from patient_docs.limits.budgets import budget_for
from patient_docs.settings import Settings


@asynccontextmanager
async def budget_slot(
    name: str,
    settings: Settings,
    *,
    patient_id: str,
    priority: float = 0,
    timeout: float | None = None,
    **arguments: object,
) -> AsyncIterator[None]:
    """Hold one slot of limit `name` for exactly one request sent inside the block.

    The slot goes back a full window after the response (or failure) arrived. The request
    reached the service before that moment, so the next request on this slot arrives more than
    a window later: with N slots no rolling window ever sees more than N arrivals, whatever the
    latency. A dead holder's lease expires by itself (see SlotBroker._lease_duration).
    """
    window = budget_for(name, settings).window
    lease = await get_broker(settings).acquire(name, priority)
    try:
        with activity("request", patient_id=patient_id, settings=settings, budget=name, request_id=uuid4().hex, **arguments):
            usage.record(name)
            # Bounded, so that the lease (renewed while we wait) always outlives the request.
            async with asyncio.timeout(timeout or settings.request_timeout):
                yield
    finally:
        lease.release_after(window)
