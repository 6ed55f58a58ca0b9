"""The patient flow end to end: simulators, Prefect test server, Dask cluster, SQLite, local storage."""

from __future__ import annotations

import json

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from patient_docs import clients
from patient_docs.pdf import pdf_name


async def run_flow(patient_id: str):
    from flows.patient import patient_flow

    return await patient_flow(patient_id=patient_id, return_state=True)


def entries_for(tt, patient_id: str):
    return [t for t in tt.tasks.values() if t.patient_id == patient_id]


async def artifacts_of(flow_run_id):
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


@pytest.mark.parametrize("files", [0, 1, 30])
async def test_flow_collects_converts_and_reports(new_patient, settings, dx, tt, files):
    names = await new_patient(files=files)
    state = await run_flow(names.patient_id)
    assert state.is_completed(), state.message

    expected_status = "DOCUMENTS_FOUND" if files else "DOCUMENTS_NOT_FOUND"
    status, updated_at = await clients.patients(settings).get_status(names.patient_id)
    assert (status, updated_at is not None) == (expected_status, True)

    store = clients.storage(settings)
    documents = store.list_documents(names.patient_id)
    assert len(documents) == files
    assert sorted(store.list_pdfs(names.patient_id)) == sorted(pdf_name(d) for d in documents)
    report = store.get_report(names.patient_id)
    assert sorted(report["documents"]) == sorted(pdf_name(d) for d in documents)

    [entry] = entries_for(tt, names.patient_id)
    assert (entry.first_name, entry.last_name, entry.status) == (names.first_name, names.last_name, expected_status)
    assert len(entry.reports) == 1 and entry.reports[0].documents == report["documents"]

    artifacts = await artifacts_of(state.state_details.flow_run_id)
    assert {"activity-log", "report"} <= set(artifacts)
    rows = artifacts["activity-log"].data
    rows = json.loads(rows) if isinstance(rows, str) else rows
    converted = [r for r in rows if r["activity"] == "convert_document" and r["event"] == "finish"]
    assert len(converted) == files


async def test_stored_files_are_the_archive_byte_for_byte(new_patient, settings, dx):
    import io
    import zipfile

    names = await new_patient(files=5)
    state = await run_flow(names.patient_id)
    assert state.is_completed(), state.message
    # the archive DocumentExchange served last is this patient's (tests run one at a time)
    archive = zipfile.ZipFile(io.BytesIO(list(dx._archive_bytes.values())[-1]))
    store = clients.storage(settings)
    expected = {i.filename: archive.read(i) for i in archive.infolist() if not i.is_dir()}
    assert {p: store.get_document(names.patient_id, p) for p in store.list_documents(names.patient_id)} == expected


@pytest.mark.parametrize(
    ("patient_id", "words"),
    [("bad id!", "invalid patient ID"), ("x" * 65, "invalid patient ID"), ("nobody-here-123", "nobody-here-123")],
)
async def test_bad_ids_fail_before_any_request(stack, dx, tt, patient_id, words):
    before = (dx.stats()["requests"], tt.stats()["requests"])
    state = await run_flow(patient_id)
    assert state.is_failed()
    assert words in state.message
    assert (dx.stats()["requests"], tt.stats()["requests"]) == before
    # a failed run still shows what it did
    rows = (await artifacts_of(state.state_details.flow_run_id))["activity-log"].data
    rows = json.loads(rows) if isinstance(rows, str) else rows
    if "invalid" not in words:  # an invalid ID fails before any activity
        assert {r["activity"] for r in rows} == {"read_patient_names"}
