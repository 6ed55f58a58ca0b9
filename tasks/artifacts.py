"""What a flow run shows in the UI besides its logs: the activity table and the report."""

from __future__ import annotations

from prefect.artifacts import acreate_markdown_artifact
from prefect.runtime import flow_run

from patient_docs.activity_log import ActivityRow, add_collected_rows, pop_collected_rows, publish_activity_table
from patient_docs.models import Report
from tasks.documents import Converted


async def publish_run(patient_id: str, report: Report, converted: list[Converted]) -> None:
    """Publish this run's activities (including those done on Dask workers) and its report."""
    run_id = str(flow_run.id or "")
    add_collected_rows(run_id, [ActivityRow(**row) for c in converted for row in c.rows])
    rows = sorted(pop_collected_rows(run_id), key=lambda r: r.timestamp)
    await publish_activity_table(run_id, rows)
    listing = "\n".join(f"| {i} | `{name}` |" for i, name in enumerate(report.documents, 1))
    table = f"| # | document |\n|---|---|\n{listing}" if listing else "_No documents were found._"
    await acreate_markdown_artifact(
        key="report", markdown=f"# {report.title}\n\n{report.body.splitlines()[0]}\n\n{table}",
        description=f"Report appended to the TaskTracker entry of patient {patient_id}",
    )


async def publish_failed_run(flow, flow_run, state) -> None:
    """Flow hook: a Failed or Crashed run still shows what it did, and frees what it collected."""
    run_id = str(flow_run.id)
    await publish_activity_table(run_id, sorted(pop_collected_rows(run_id), key=lambda r: r.timestamp))
