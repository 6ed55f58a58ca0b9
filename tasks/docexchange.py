"""DocumentExchange steps: search (2), wait for the archive (3), download and store it (4)."""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path

from prefect import task

from patient_docs import admission, clients
from patient_docs.activity_log import activity
from patient_docs.archive import check_archive, iter_files
from patient_docs.errors import NotFound, OutageDeadline, SearchFailed, TransientError
from patient_docs.limits import budget_slot
from patient_docs.limits.budgets import POLL, TRANSFER
from patient_docs.models import PatientNames
from patient_docs.settings import get_settings
from tasks.patients import checkpoint, run_state
from tasks.policy import SERVICE_RETRIES, honour_retry_after


@task(**SERVICE_RETRIES)
async def start_search(names: PatientNames, priority: int = 0) -> str:
    """Start a search and return its job id; a resumed run reuses the job it already has."""
    settings = get_settings()
    run = await run_state(names.patient_id)
    if run is not None and run.job_id:
        return run.job_id
    pid = names.patient_id
    with activity("search", patient_id=pid, settings=settings, first_name=names.first_name, last_name=names.last_name):
        async with honour_retry_after(settings), clients.docexchange(settings) as dx:
            async with budget_slot(TRANSFER, settings, patient_id=pid, priority=priority, endpoint="search"):
                job_id = await dx.start_search(names.first_name, names.last_name)
    await checkpoint(pid, job_id=job_id)
    return job_id


@task(**SERVICE_RETRIES)
async def wait_for_archive(patient_id: str, job_id: str, priority: int = 0) -> str:
    """Poll the job with jittered, bounded exponential backoff until it has an archive URL.

    Polls are spaced 1 s, 1.5 s, 2.3 s … up to poll_max_seconds: a 10-minute job costs about
    fifteen polls. An outage during polling only lengthens the wait; it never starts a new search.
    A job that ends "failed" raises SearchFailed and the flow starts a new search.
    """
    settings = get_settings()
    delay = settings.scaled(settings.poll_initial_seconds)
    give_up = time.monotonic() + settings.scaled(settings.outage_deadline_seconds)
    with activity("wait_for_archive", patient_id=patient_id, settings=settings, job_id=job_id):
        async with clients.docexchange(settings) as dx:
            while True:
                try:
                    async with budget_slot(POLL, settings, patient_id=patient_id, priority=priority, endpoint="status"):
                        job = await dx.job(job_id)
                except TransientError as exc:
                    if time.monotonic() > give_up:
                        raise OutageDeadline("DocumentExchange", f"no answer to status polls since the deadline: {exc}")
                    delay = max(delay, exc.retry_after or 0)
                except NotFound:
                    # The service forgot the job (expired): only a new search can find the documents.
                    await checkpoint(patient_id, job_id=None)
                    raise SearchFailed("DocumentExchange", f"search job {job_id} is unknown to the service")
                else:
                    give_up = time.monotonic() + settings.scaled(settings.outage_deadline_seconds)
                    if job.status == "completed" and job.archive_url:
                        return job.archive_url
                    if job.status == "failed":
                        await checkpoint(patient_id, job_id=None)
                        raise SearchFailed("DocumentExchange", f"search job {job_id} failed: {job.error}")
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 1.5, settings.scaled(settings.poll_max_seconds))


@task(**SERVICE_RETRIES)
async def store_archive(patient_id: str, archive_url: str, priority: int = 0) -> list[str]:
    """Download the archive, check every entry, then store every file; return their paths."""
    settings = get_settings()
    store = clients.storage(settings)
    run = await run_state(patient_id)
    if run is not None and run.archive_stored:
        admission.transfers_done(patient_id)
        return store.list_documents(patient_id)  # resumed: the budget was already spent on it
    with activity("store_archive", patient_id=patient_id, settings=settings, archive_url=archive_url):
        with tempfile.TemporaryDirectory(prefix="patient-docs-") as tmp:
            zip_path = Path(tmp) / "archive.zip"
            async with honour_retry_after(settings), clients.docexchange(settings) as dx:
                dx.check_archive_url(archive_url)  # refuse before spending a slot
                # Half a level above searches of the same priority: a download feeds the conversions
                # at once, so queued downloads go before new searches (still below any higher priority).
                async with budget_slot(
                    TRANSFER, settings, patient_id=patient_id, priority=priority + 0.5, endpoint="download",
                    timeout=settings.download_timeout,
                ):
                    await dx.download(archive_url, zip_path)
            limits = dict(max_files=settings.max_archive_files, max_file_bytes=settings.max_file_bytes,
                          max_archive_bytes=settings.max_archive_bytes)
            paths = check_archive(zip_path, **limits)
            # Replace, never mix: the previous run's files go before this run's arrive, and a
            # failure half-way (a bomb found while inflating) leaves nothing behind.
            store.clear_patient(patient_id)
            try:
                for path, data in iter_files(zip_path, paths, max_file_bytes=settings.max_file_bytes):
                    store.put_document(patient_id, path, data)
            except BaseException:
                store.clear_patient(patient_id)
                raise
    await checkpoint(patient_id, archive_stored=True)
    admission.transfers_done(patient_id)  # the next queued patient may start its transfers
    return paths
