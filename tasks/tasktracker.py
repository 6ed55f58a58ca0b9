"""TaskTracker steps: create the entry (5), set its status (7), append the report (9)."""

from __future__ import annotations

from prefect import task

from patient_docs import clients
from patient_docs.activity_log import activity
from patient_docs.limits import budget_slot
from patient_docs.limits.budgets import TASKTRACKER
from patient_docs.models import DocumentsStatus, PatientNames, Report
from patient_docs.settings import get_settings
from tasks.patients import checkpoint, run_state
from tasks.policy import SERVICE_RETRIES, honour_retry_after


@task(**SERVICE_RETRIES)
async def create_entry(names: PatientNames, priority: int = 0) -> str:
    """Create the patient's entry once per run: the Idempotency-Key is the run's id."""
    settings = get_settings()
    pid = names.patient_id
    run = await run_state(pid)
    if run is not None and run.task_id:
        return run.task_id
    with activity("create_entry", patient_id=pid, settings=settings, first_name=names.first_name, last_name=names.last_name):
        async with honour_retry_after(settings), clients.tasktracker(settings) as tt:
            async with budget_slot(TASKTRACKER, settings, patient_id=pid, priority=priority, endpoint="create"):
                entry = await tt.create_task(pid, names.first_name, names.last_name, idempotency_key=f"{run.run_id}:create")
    await checkpoint(pid, task_id=entry.task_id)
    return entry.task_id


@task(**SERVICE_RETRIES)
async def set_entry_status(patient_id: str, task_id: str, status: DocumentsStatus, priority: int = 0) -> None:
    """PATCH the entry's status; repeating it is harmless."""
    settings = get_settings()
    with activity("set_entry_status", patient_id=patient_id, settings=settings, task_id=task_id, status=str(status)):
        async with honour_retry_after(settings), clients.tasktracker(settings) as tt:
            async with budget_slot(TASKTRACKER, settings, patient_id=patient_id, priority=priority, endpoint="status"):
                await tt.set_status(task_id, status)


@task(**SERVICE_RETRIES)
async def append_report(patient_id: str, task_id: str, report: Report, priority: int = 0) -> None:
    """Append the report once per run (Idempotency-Key = run id), then close the run."""
    settings = get_settings()
    run = await run_state(patient_id)
    with activity("append_report", patient_id=patient_id, settings=settings, task_id=task_id, documents=len(report.documents)):
        async with honour_retry_after(settings), clients.tasktracker(settings) as tt:
            async with budget_slot(TASKTRACKER, settings, patient_id=patient_id, priority=priority, endpoint="report"):
                await tt.append_report(task_id, report, idempotency_key=f"{run.run_id}:report")
    await clients.patients(settings).finish_run(patient_id)
