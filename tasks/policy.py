"""Retry policy shared by the tasks: retry what may pass, never what cannot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from patient_docs.errors import PermanentError, PatientDocsError, TransientError
from patient_docs.settings import Settings, get_settings


def transient_only(task, task_run, state) -> bool:
    """Prefect retry condition: retry transient service failures (and unexpected bugs), not permanent ones."""
    # The engine hands over Failed(data=exception); reading .data works for sync and async tasks alike.
    exc = state.data
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, (PermanentError, PatientDocsError)):
        return False
    return isinstance(exc, Exception)  # unknown failures get the task's retries


def outage_delays(settings: Settings) -> list[float]:
    """Retry delays doubling from retry_base_seconds up to retry_max_seconds, until they cover the
    outage deadline (all x time_scale). Defaults: 2 s, 4 s … 10 min, about 4 hours in 31 retries."""
    delays: list[float] = []
    delay = settings.scaled(settings.retry_base_seconds)
    while sum(delays) < settings.scaled(settings.outage_deadline_seconds) and len(delays) < 50:  # Prefect's cap
        delays.append(delay)
        delay = min(delay * 2, settings.scaled(settings.retry_max_seconds))
    return delays


# A patient waits through an outage until the deadline, then its task, and so its run, ends Failed.
SERVICE_RETRIES = dict(
    retries=len(outage_delays(get_settings())),
    retry_delay_seconds=outage_delays(get_settings()),
    retry_jitter_factor=0.5,
    retry_condition_fn=transient_only,
)


@asynccontextmanager
async def honour_retry_after(settings: Settings) -> AsyncIterator[None]:
    """A 503/429 carrying Retry-After waits that long (capped at poll_max_seconds, scaled) before
    the task fails and Prefect schedules its retry; the retry then passes the limits again."""
    try:
        yield
    except TransientError as exc:
        if exc.retry_after:
            await asyncio.sleep(min(exc.retry_after, settings.scaled(settings.poll_max_seconds)))
        raise
