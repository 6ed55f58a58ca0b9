"""The DocumentExchange and TaskTracker clients against the simulators, in process (httpx ASGITransport)."""

from __future__ import annotations

import uuid
import zipfile

import httpx
import pytest

from patient_docs.clients.docexchange import DocExchangeClient
from patient_docs.clients.tasktracker import TaskTrackerClient
from patient_docs.errors import NotFound, PermanentError, RateLimited, TransientError, UnsafeArchiveUrl
from patient_docs.models import DocumentsStatus, Report
from patient_docs.settings import Settings
from patient_docs.simulators.docexchange import create_docexchange_app
from patient_docs.simulators.tasktracker import create_tasktracker_app

DX_URL, TT_URL = "http://dx.test", "http://tt.test"


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def settings(**overrides) -> Settings:
    values = dict(sim_job_seconds=10.0, sim_download_seconds=0.0, sim_latency_min=0.0, sim_latency_max=0.0,
                  docexchange_url=DX_URL, tasktracker_url=TT_URL)
    return Settings(**(values | overrides))


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
async def dx(clock):
    app = create_docexchange_app(settings(), clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        yield DocExchangeClient(http, DX_URL), app.state.sim


@pytest.fixture
async def tt():
    app = create_tasktracker_app(settings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        yield TaskTrackerClient(http, TT_URL), app.state.sim


async def test_search_poll_download(dx, clock, tmp_path):
    client, sim = dx
    sim.set_patient("Ada", "Lovelace", files=3)
    job_id = await client.start_search("Ada", "Lovelace")
    assert (await client.job(job_id)).archive_url is None
    clock.now += 11
    job = await client.job(job_id)
    assert job.status == "completed" and job.archive_url.startswith(DX_URL)
    size = await client.download(job.archive_url, tmp_path / "a.zip")
    assert size == (tmp_path / "a.zip").stat().st_size
    assert len(zipfile.ZipFile(tmp_path / "a.zip").namelist()) == 3


async def test_unknown_job_is_not_found(dx):
    client, _ = dx
    with pytest.raises(NotFound):
        await client.job("no-such-job")


async def test_invalid_search_body_is_permanent(dx):
    client, _ = dx
    with pytest.raises(PermanentError):
        await client.start_search("", "Lovelace")


async def test_over_budget_is_rate_limited_with_retry_after(dx):
    client, _ = dx
    for _ in range(10):
        await client.start_search("Ada", "Lovelace")
    with pytest.raises(RateLimited) as caught:
        await client.start_search("Ada", "Lovelace")
    assert caught.value.retry_after and caught.value.retry_after > 0


async def test_outage_is_transient(dx):
    client, sim = dx
    sim.faults.set_outage("503", 60, retry_after=7)
    with pytest.raises(TransientError) as caught:
        await client.start_search("Ada", "Lovelace")
    assert caught.value.retry_after == 7


async def test_dropped_connection_is_transient(dx):
    client, sim = dx
    sim.faults.set_outage("drop", 60)
    with pytest.raises(TransientError):
        await client.job("x")


@pytest.mark.parametrize(
    "url",
    ["http://evil.test/v1/archives/a", "https://dx.test/v1/archives/a", "http://dx.test:8080/v1/archives/a",
     "http://dx.test/v1/searches/a", "file:///etc/passwd"],
)
async def test_foreign_archive_url_is_refused_without_a_request(url, tmp_path):
    sent = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(200))
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(UnsafeArchiveUrl):
            await DocExchangeClient(http, DX_URL).download(url, tmp_path / "a.zip")
    assert sent == []


async def test_task_lifecycle_and_idempotency(tt):
    client, sim = tt
    key = uuid.uuid4().hex
    first = await client.create_task("p1", "Ada", "Lovelace", idempotency_key=key)
    again = await client.create_task("p1", "Ada", "Lovelace", idempotency_key=key)
    assert first.task_id == again.task_id and len(sim.tasks) == 1 and first.status == "NEW"
    assert (await client.set_status(first.task_id, DocumentsStatus.FOUND)).status == "DOCUMENTS_FOUND"
    report = Report(title="t", documents=["a.pdf"], body="b")
    await client.append_report(first.task_id, report, idempotency_key=f"{key}:r")
    task = await client.append_report(first.task_id, report, idempotency_key=f"{key}:r")
    assert [r.documents for r in (await client.get_task(first.task_id)).reports] == [["a.pdf"]]
    assert task.task_id == first.task_id


async def test_unknown_task_is_not_found(tt):
    client, _ = tt
    with pytest.raises(NotFound):
        await client.set_status("nope", DocumentsStatus.NOT_FOUND)


async def test_refused_connection_and_time_out_are_transient():
    import socket

    with socket.socket() as sock:  # a port nobody listens on: the connection is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with httpx.AsyncClient() as http:
        with pytest.raises(TransientError, match="ConnectError"):
            await DocExchangeClient(http, f"http://127.0.0.1:{port}").job("x")

    def too_slow(request):
        raise httpx.ReadTimeout("timed out", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(too_slow)) as http:
        with pytest.raises(TransientError, match="ReadTimeout"):
            await TaskTrackerClient(http, TT_URL).get_task("t")
