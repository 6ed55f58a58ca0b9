"""activity() inside a real Prefect flow: run logger, per-run collector and the published table artifact."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.runtime import flow_run
from prefect.testing.utilities import prefect_test_harness

from patient_docs.activity_log import (
    ARTIFACT_KEY,
    ActivityRow,
    activity,
    add_collected_rows,
    pop_collected_rows,
    publish_activity_table,
)
from patient_docs.settings import Settings


@pytest.fixture(scope="module")
def prefect_server() -> Iterator[None]:
    """A throw-away Prefect API for this module."""
    with prefect_test_harness(server_startup_timeout=60):
        yield


@task
def convert(settings: Settings) -> list[ActivityRow]:
    """A task that returns its rows, as a remote (Dask) task must."""
    with activity("convert", patient_id="p1", settings=settings, file="a.doc") as handle:
        pass
    return handle.rows


@flow
async def documents(settings: Settings) -> tuple[str, list[ActivityRow], list[ActivityRow]]:
    """Record activities in the flow and a task, then publish them."""
    run_id = str(flow_run.id)
    with activity("download", patient_id="p1", settings=settings, first_name="Jane"):
        pass
    returned = convert(settings)
    add_collected_rows(run_id, returned)  # already collected in this process: merged without duplicates
    rows = pop_collected_rows(run_id)
    await publish_activity_table(run_id, rows)
    return run_id, rows, returned


async def test_flow_collects_and_publishes(prefect_server: None, settings: Settings) -> None:
    run_id, rows, returned = await documents(settings)
    assert [(row.activity, row.event) for row in rows] == [
        ("download", "start"), ("download", "finish"), ("convert", "start"), ("convert", "finish"),
    ]
    assert {row.flow_run_id for row in rows} == {run_id} and returned == rows[2:]
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[ARTIFACT_KEY]),
                                           flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    assert len(artifacts) == 1 and artifacts[0].type == "table"
    assert "J***" in str(artifacts[0].data) and "Jane" not in str(artifacts[0].data)
