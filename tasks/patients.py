"""Patient database steps: read the names (step 1), record the outcome (step 7)."""

from __future__ import annotations

import asyncio
import uuid

from prefect import task
from prefect.runtime import flow_run

from patient_docs import clients
from patient_docs.activity_log import activity
from patient_docs.models import DocumentsStatus, PatientNames, validate_patient_id
from patient_docs.settings import get_settings
from tasks.policy import transient_only


@task(retries=3, retry_delay_seconds=[1, 5, 20], retry_condition_fn=transient_only)
async def read_patient_names(patient_id: str) -> PatientNames:
    """Validate the ID, read the names, and start (or resume) the patient's run."""
    settings = get_settings()
    validate_patient_id(patient_id)
    repo = clients.patients(settings)
    with activity("read_patient_names", patient_id=patient_id, settings=settings):
        await asyncio.sleep(settings.scaled(settings.database_seconds))
        names = await repo.get_names(patient_id)
        # The run id is the TaskTracker Idempotency-Key: never empty, even outside a flow run.
        await repo.start_run(patient_id, run_id=str(flow_run.id or uuid.uuid4()))
    return names


@task(retries=3, retry_delay_seconds=[1, 5, 20], retry_condition_fn=transient_only)
async def save_status(patient_id: str, status: DocumentsStatus) -> None:
    """Write DOCUMENTS_FOUND / DOCUMENTS_NOT_FOUND to the database (idempotent)."""
    settings = get_settings()
    with activity("save_status", patient_id=patient_id, settings=settings, status=str(status)):
        await asyncio.sleep(settings.scaled(settings.database_seconds))
        await clients.patients(settings).set_status(patient_id, status)


async def run_state(patient_id: str):
    """The patient's current run checkpoint (job id, archive stored, task id)."""
    return await clients.patients(get_settings()).get_run(patient_id)


async def checkpoint(patient_id: str, **fields: object) -> None:
    await clients.patients(get_settings()).save_run(patient_id, **fields)
