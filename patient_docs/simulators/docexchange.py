"""DocumentExchange simulator: search jobs, zip archives, two budgets, latency and faults."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import FastAPI, HTTPException, Request, Response

from patient_docs.settings import Settings
from patient_docs.simulators.common import SimMiddleware, add_sim_routes, install_contract_openapi, limit_responses
from patient_docs.simulators.docexchange_state import DocExchangeSim, PatientProfile, SearchJob, SearchRequest

__all__ = ["DocExchangeSim", "PatientProfile", "create_docexchange_app"]


def create_docexchange_app(
    settings: Settings, *, clock: Callable[[], float] | None = None, seed: int | None = None
) -> FastAPI:
    """A FastAPI app that implements documentexchange.openapi.yaml."""
    app = FastAPI(title="DocumentExchange", version="1.0", separate_input_output_schemas=False)
    sim = DocExchangeSim(settings, clock=clock, seed=seed)
    app.state.sim = sim

    @app.post(
        "/v1/searches",
        status_code=202,
        operation_id="searchDocuments",
        summary="Start a document search for a patient (transfer budget).",
        response_model=SearchJob,
        responses={202: {"description": "Search job accepted."}, 422: {"description": "Invalid body."}}
        | limit_responses(),
    )
    async def search_documents(body: SearchRequest) -> SearchJob:
        job = sim.start_job(body.first_name, body.last_name)
        return SearchJob(job_id=job.job_id, status="pending")

    @app.get(
        "/v1/searches/{job_id}",
        operation_id="getSearchStatus",
        summary="Status of a search job (poll budget).",
        response_model=SearchJob,
        responses={200: {"description": "Current state of the job."}, 404: {"description": "Unknown job id."}}
        | limit_responses(),
    )
    async def get_search_status(job_id: str, request: Request) -> SearchJob:
        job = sim.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, "unknown job id")
        return sim.job_view(job, str(request.base_url))

    @app.get(
        "/v1/archives/{archive_id}",
        operation_id="downloadArchive",
        summary="Download the archive of a completed search (transfer budget).",
        response_class=Response,
        responses={
            200: {
                "description": "The archive.",
                "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
            },
            404: {"description": "Unknown or expired archive."},
        }
        | limit_responses(),
    )
    async def download_archive(archive_id: str) -> Response:
        if archive_id not in sim.archives:
            raise HTTPException(404, "unknown or expired archive")
        await asyncio.sleep(settings.scaled(settings.sim_download_seconds))
        data = await sim.archive(archive_id)
        if data is None:  # reset while sleeping
            raise HTTPException(404, "unknown or expired archive")
        return Response(data, media_type="application/zip")

    @app.post("/_sim/patients", include_in_schema=False)
    async def sim_patients(body: PatientProfile) -> PatientProfile:
        data = body.model_dump(exclude={"first_name", "last_name"})
        return sim.set_patient(body.first_name, body.last_name, **data)

    add_sim_routes(app, sim)
    app.add_middleware(SimMiddleware, core=sim)
    install_contract_openapi(app)
    return app
