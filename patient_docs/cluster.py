"""The Dask side: what a conversion worker declares and what one conversion asks for."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


# Imported by every worker at start-up (`dask worker --preload tasks.documents`): the first
# conversions otherwise import it, and Prefect with it, on the worker - 3 to 5 s in which the
# worker's slots sit idle, and an unimportable module would only show at the first conversion.
WORKER_PRELOAD = "tasks.documents"


def local_cluster_kwargs(settings: Settings) -> dict:
    return dict(
        n_workers=1,
        preload=[WORKER_PRELOAD],
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


# One asynchronous client per event loop and scheduler, shared by every flow on that loop: a
# backfill runs all its flows on one loop, and a client per patient would cost a connection and
# scheduler-side state each time. Not the default client, so prefect-dask's runner never picks up
# one of ours half-connected (it looks for a global client first).
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Future]] = weakref.WeakKeyDictionary()


async def dask_client(settings: Settings) -> Client:
    """This loop's client to the cluster at PATIENT_DOCS_DASK_ADDRESS, or to the flow run's own cluster."""
    address = settings.dask_address or FlowRunContext.get().task_runner.client.scheduler.address
    loop = asyncio.get_running_loop()
    clients = _clients.setdefault(loop, {})
    pending = clients.get(address)
    if pending is None or (pending.done() and (pending.exception() or pending.result().status != "running")):
        pending = clients[address] = asyncio.ensure_future(Client(address, asynchronous=True, set_as_default=False))
    return await asyncio.shield(pending)


async def close_dask_clients() -> None:
    """Close this loop's clients (before the loop ends)."""
    for pending in _clients.pop(asyncio.get_running_loop(), {}).values():
        if pending.done() and not pending.exception():
            await pending.result().close()


@contextmanager
def dask_processes(
    workers: int, settings: Settings, *, directory: Path, env: dict[str, str] | None = None, nthreads: int | None = None,
) -> Iterator[str]:
    """`dask scheduler` and `workers` x `dask worker --resources ...` as separate processes; yields the address.

    The same commands as docs/operations.md, for benchmarks and tests of the external-cluster path:
    the scheduler then has a process (and a GIL) of its own instead of sharing the orchestrator's.
    `nthreads` (default: the declared CPU count) lets a test give a worker more threads than resources.
    """
    bin_dir = Path(sys.executable).parent
    scheduler_file = directory / "scheduler.json"
    scheduler_file.unlink(missing_ok=True)
    resources = ",".join(f"{key}={value:g}" for key, value in worker_resources(settings).items())
    env = {**os.environ, **(env or {})}
    procs = [subprocess.Popen(
        [bin_dir / "dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0",
         "--scheduler-file", scheduler_file], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        procs += [subprocess.Popen(
            [bin_dir / "dask", "worker", "--scheduler-file", scheduler_file, "--nthreads", str(nthreads or settings.worker_threads),
             "--resources", resources, "--preload", WORKER_PRELOAD, "--name", f"conversion-{i}",
             "--dashboard-address", ":0"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(workers)]
        with Client(scheduler_file=str(scheduler_file), timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
            address = client.scheduler.address
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
