"""The Dask side: what a conversion worker declares and what one conversion asks for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from distributed import Client
from prefect.context import FlowRunContext
from prefect_dask import DaskTaskRunner

from patient_docs.settings import Settings


def worker_resources(settings: Settings) -> dict[str, float]:
    """8 cores and 12 GB by default: `dask worker --resources "CPU=8,MEMORY=12e9"`."""
    return {"CPU": settings.worker_threads, "MEMORY": settings.worker_memory}


def conversion_resources(settings: Settings) -> dict[str, float]:
    """A conversion is single-threaded and may need 1 GB: one CPU, one GB."""
    return {"CPU": 1, "MEMORY": settings.conversion_memory}


def local_cluster_kwargs(settings: Settings) -> dict:
    return dict(
        n_workers=1,
        threads_per_worker=settings.worker_threads,
        resources=worker_resources(settings),
        processes=True,
        dashboard_address=":0",
    )


def task_runner(settings: Settings) -> DaskTaskRunner:
    """The scheduler at PATIENT_DOCS_DASK_ADDRESS, or a local cluster for this flow run."""
    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(settings))


@asynccontextmanager
async def flow_dask_client() -> AsyncIterator[Client]:
    """An async client to the cluster of the current flow run's DaskTaskRunner, usable from a task.

    prefect_dask.get_async_dask_client only works in the flow itself or on a Dask worker; a task
    running in the flow's process reaches the runner through the flow run context instead.
    """
    runner = FlowRunContext.get().task_runner
    async with Client(runner.client.scheduler.address, asynchronous=True) as client:
        yield client
