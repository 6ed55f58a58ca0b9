"""Retry policy shared by the tasks: retry what may pass, never what cannot."""

from __future__ import annotations

from prefect.tasks import exponential_backoff

from patient_docs.errors import PermanentError, PatientDocsError, TransientError


def transient_only(task, task_run, state) -> bool:
    """Prefect retry condition: retry transient service failures (and unexpected bugs), not permanent ones."""
    # The engine hands over Failed(data=exception); reading .data works for sync and async tasks alike.
    exc = state.data
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, (PermanentError, PatientDocsError)):
        return False
    return isinstance(exc, Exception)  # unknown failures get the task's retries


# Outages last seconds to many minutes: 10 tries spaced 2 s .. ~17 min (jittered) ride them out.
SERVICE_RETRIES = dict(
    retries=10,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=transient_only,
)
