"""Document steps: convert one file to PDF (6, on Dask) and write the report (8)."""

from __future__ import annotations

import asyncio
import time

from prefect import task
from pydantic import BaseModel

from patient_docs import clients
from patient_docs.activity_log import ActivityRow, activity
from patient_docs.models import Report
from patient_docs.pdf import make_pdf, pdf_name
from patient_docs.settings import get_settings


class Converted(BaseModel):
    source: str
    pdf: str
    rows: list[dict]  # the activity rows written on the worker, for the flow's artifact


@task(retries=2, retry_delay_seconds=1)
def convert_document(patient_id: str, source: str) -> Converted:
    """Convert one stored file to PDF (simulated: single-threaded, sleeps conversion_seconds)."""
    settings = get_settings()
    store = clients.storage(settings)
    name = pdf_name(source)
    with activity("convert_document", patient_id=patient_id, settings=settings, source=source) as act:
        data = store.get_document(patient_id, source)
        time.sleep(settings.scaled(settings.conversion_seconds))
        store.put_pdf(patient_id, name, make_pdf(source, [f"{len(data)} bytes converted from {source}"]))
    return Converted(source=source, pdf=name, rows=[row_dict(r) for r in act.rows])


def row_dict(row: ActivityRow) -> dict:
    from dataclasses import asdict

    return asdict(row)


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


async def convert_all(patient_id: str, sources: list[str], priority: int = 0) -> list[Converted]:
    """Map the conversions onto the Dask cluster, each asking for its share of a worker."""
    import dask
    from prefect import unmapped

    from patient_docs.cluster import conversion_resources

    if not sources:
        return []
    # Dask runs higher `priority` first among queued tasks, across all flows on the cluster.
    with dask.annotate(resources=conversion_resources(get_settings()), priority=priority):
        futures = convert_document.map(unmapped(patient_id), sources)
    # Waiting on Dask futures blocks: do it off the event loop so other flows here keep going.
    return await asyncio.to_thread(futures.result)
