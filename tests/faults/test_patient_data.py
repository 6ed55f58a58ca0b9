"""Patient names are health data: masked in the activity CSV and artifact, never flow parameters."""

from __future__ import annotations

import json

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from fault_helpers import assert_completed, run_flow
from patient_docs.activity_log import read_rows

pytestmark = pytest.mark.usefixtures("clean_faults")


async def test_names_are_masked_and_not_parameters(new_patient, settings, dx, tt):
    """docs/outages.md: PATIENT_DOCS_LOG_PATIENT_NAMES=false (the default) masks names everywhere we write."""
    assert settings.log_patient_names is False
    names = await new_patient(files=1)
    state = await run_flow(names.patient_id)
    await assert_completed(state, names, 1, settings, dx, tt)
    secret = (names.first_name, names.last_name)

    rows = [r for r in read_rows(settings.activity_log) if r.patient_id == names.patient_id]
    assert {r.activity for r in rows} >= {"search", "create_entry", "store_archive"}
    text = "\n".join(",".join(map(str, r.__dict__.values())) for r in rows)
    assert not any(name in text for name in secret)
    search = next(r for r in rows if r.activity == "search")
    assert search.args["first_name"] == names.first_name[0] + "***"

    async with get_client() as client:
        run = await client.read_flow_run(state.state_details.flow_run_id)
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    assert set(run.parameters) <= {"patient_id", "priority"} and run.parameters["patient_id"] == names.patient_id
    shown = json.dumps(run.parameters) + run.name + "".join(json.dumps(a.data) + (a.description or "") for a in artifacts)
    assert "activity-log" in {a.key for a in artifacts}
    assert not any(name in shown for name in secret)
