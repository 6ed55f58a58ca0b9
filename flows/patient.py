"""The patient flow: the nine steps of the brief, in order."""

from __future__ import annotations

import asyncio

from prefect import flow

from patient_docs.cluster import task_runner
from patient_docs.errors import SearchFailed
from patient_docs.models import DocumentsStatus, PatientNames
from patient_docs.settings import get_settings
from tasks.artifacts import publish_failed_run, publish_run
from tasks.docexchange import start_search, store_archive, wait_for_archive
from tasks.documents import convert_all, generate_report
from tasks.patients import read_patient_names, save_status
from tasks.tasktracker import append_report, create_entry, set_entry_status

INTERACTIVE, BACKFILL = 10, 0
SEARCH_ATTEMPTS = 3  # a search job that ends "failed" is searched again, at most this often


@flow(
    name="patient", flow_run_name="patient-{patient_id}", task_runner=task_runner(get_settings()),
    on_failure=[publish_failed_run], on_crashed=[publish_failed_run],
)
async def patient_flow(patient_id: str, priority: int = INTERACTIVE) -> dict:
    """Collect, convert and report one patient's documents."""
    names = await read_patient_names(patient_id)                                  # 1
    archive_url = await find_archive(names, priority)                             # 2, 3
    files = await store_archive(patient_id, archive_url, priority)                # 4
    # 5 and 6 together: conversions need no entry, and the Dask slots should not wait on TaskTracker.
    task_id, converted = await asyncio.gather(
        create_entry(names, priority),                                            # 5
        convert_all(patient_id, files, priority),                                 # 6
    )
    status = DocumentsStatus.FOUND if files else DocumentsStatus.NOT_FOUND        # 7
    await save_status(patient_id, status)
    await set_entry_status(patient_id, task_id, status, priority)
    report = await generate_report(patient_id, [c.pdf for c in converted])        # 8
    await append_report(patient_id, task_id, report, priority)                    # 9
    await publish_run(patient_id, report, converted)
    return {"patient_id": patient_id, "status": str(status), "documents": len(converted), "task_id": task_id}


async def find_archive(names: PatientNames, priority: int) -> str:
    """Search (2) and wait for the archive (3); a failed job is only fixed by a new search."""
    for attempt in range(1, SEARCH_ATTEMPTS + 1):
        job_id = await start_search(names, priority)
        try:
            return await wait_for_archive(names.patient_id, job_id, priority)
        except SearchFailed:
            if attempt == SEARCH_ATTEMPTS:
                raise
    raise AssertionError("unreachable")
