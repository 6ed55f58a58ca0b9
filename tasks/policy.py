"""Retry policy shared by the tasks: retry what may pass, never what cannot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prefect.tasks import exponential_backoff

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


# The first retry waits 2 s (scaled by PATIENT_DOCS_TIME_SCALE, so simulations and tests wait 2 s x scale).
RETRY_BASE_SECONDS = 2.0 * get_settings().time_scale

# Outages last seconds to many minutes: 10 retries spaced 2 s, 4 s .. ~17 min (jittered, x time_scale)
# ride out about 34 minutes in total; after that the task, and so the flow run, ends Failed.
SERVICE_RETRIES = dict(
    retries=10,
    retry_delay_seconds=exponential_backoff(backoff_factor=RETRY_BASE_SECONDS),
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
