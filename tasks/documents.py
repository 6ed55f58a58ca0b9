"""Document steps: convert every file to PDF on Dask (6) and write the report (8)."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import asdict

from prefect import task
from prefect.runtime import flow_run
from pydantic import BaseModel

from patient_docs import clients
from patient_docs.activity_log import activity
from patient_docs.cluster import conversion_resources, dask_client
from patient_docs.models import Report
from patient_docs.pdf import make_pdf, pdf_name
from patient_docs.settings import Settings, get_settings


class Converted(BaseModel):
    source: str
    pdf: str
    rows: list[dict]  # the activity rows written on the worker, for the flow's artifact


def convert_file(patient_id: str, source: str, flow_run_id: str) -> Converted:
    """Convert one stored file to PDF on a Dask worker (simulated: single-threaded, sleeps)."""
    settings = get_settings()
    store = clients.storage(settings)
    name = pdf_name(source)
    with activity("convert_document", patient_id=patient_id, settings=settings, flow_run_id=flow_run_id, source=source) as act:
        data = store.get_document(patient_id, source)
        time.sleep(settings.scaled(settings.conversion_seconds))
        store.put_pdf(patient_id, name, make_pdf(source, [f"{len(data)} bytes converted from {source}"]))
    return Converted(source=source, pdf=name, rows=[asdict(r) for r in act.rows])


def convert_files(patient_id: str, sources: list[str], flow_run_id: str) -> list[Converted]:
    """One Dask task: convert `sources` one after another (one thread, one conversion's memory)."""
    return [convert_file(patient_id, source, flow_run_id) for source in sources]


def batches(sources: list[str], settings: Settings) -> list[list[str]]:
    """The files of each Dask task: enough to fill `conversion_batch_seconds`, at least one, and never
    so many that a patient alone would leave a worker's slots idle."""
    spread = math.ceil(len(sources) / settings.worker_threads)
    cost = settings.scaled(settings.conversion_seconds)
    per = min(spread, math.ceil(settings.conversion_batch_seconds / cost)) if cost > 0 else spread
    per = max(1, per)
    return [sources[i:i + per] for i in range(0, len(sources), per)]


@task(retries=2, retry_delay_seconds=5)
async def convert_all(patient_id: str, sources: list[str], priority: int = 0) -> list[Converted]:
    """Convert every file on the Dask cluster, each Dask task asking for one conversion's share.

    Plain Dask tasks, not Prefect tasks: a 3000-file archive costs the Prefect API nothing per
    file, the worker's resources (CPU=8, MEMORY=12e9) cap concurrent conversions across every flow
    on the cluster, and `priority` lets an interactive patient's files overtake queued backfill files.
    A task converts one file at real durations, a few back to back when time is compressed (`batches`).
    """
    if not sources:
        return []
    settings = get_settings()
    run_id = str(flow_run.id or "")
    with activity("convert_documents", patient_id=patient_id, settings=settings, files=len(sources)):
        client = await dask_client(settings)
        parts = batches(sources, settings)
        futures = client.map(
            convert_files, [patient_id] * len(parts), parts, [run_id] * len(parts),
            resources=conversion_resources(settings), priority=priority, retries=2, pure=False,
        )
        return [converted for part in await client.gather(futures) for converted in part]


@task
async def generate_report(patient_id: str, pdfs: list[str]) -> Report:
    """Build the report listing the converted documents and store it as P/report.json."""
    settings = get_settings()
    with activity("generate_report", patient_id=patient_id, settings=settings, documents=len(pdfs)):
        await asyncio.sleep(settings.scaled(settings.report_seconds))
        lines = "\n".join(f"- {name}" for name in pdfs) or "No documents were found."
        report = Report(
            title=f"Documents for patient {patient_id}",
            documents=pdfs,
            body=f"{len(pdfs)} document(s) converted to PDF.\n{lines}",
        )
        clients.storage(settings).put_report(patient_id, report.model_dump())
    return report
