"""The retry policy itself: which failures are transient, how long retries go on, Retry-After."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from patient_docs.clients.http import request
from patient_docs.errors import NotFound, PermanentError, RateLimited, TransientError
from patient_docs.settings import Settings


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (httpx.Response(503), TransientError),
        (httpx.Response(503, headers={"Retry-After": "7"}), TransientError),
        (httpx.Response(429, headers={"Retry-After": "2"}), RateLimited),
        (httpx.Response(504), TransientError),
        (httpx.Response(404), NotFound),
        (httpx.Response(422), PermanentError),
        (httpx.ConnectError("refused"), TransientError),
        (httpx.ReadTimeout("timed out"), TransientError),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), TransientError),
    ],
)
async def test_failure_kinds_map_to_typed_errors(reply, error):
    def handler(req: httpx.Request) -> httpx.Response:
        if isinstance(reply, Exception):
            raise reply
        return reply

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(error) as caught:
            await request("Svc", http, "GET", httpx.URL("http://svc/v1/x"))
    if isinstance(reply, httpx.Response) and "Retry-After" in reply.headers:
        assert caught.value.retry_after == float(reply.headers["Retry-After"])


def test_service_tasks_carry_the_visible_policy(settings):
    from tasks.docexchange import start_search, store_archive, wait_for_archive
    from tasks.policy import outage_delays, transient_only
    from tasks.tasktracker import append_report, create_entry, set_entry_status

    for task in (start_search, wait_for_archive, store_archive, create_entry, set_entry_status, append_report):
        assert task.retry_condition_fn is transient_only
        assert task.retry_delay_seconds == outage_delays(settings) and task.retries == len(task.retry_delay_seconds)


def test_retries_cover_the_outage_deadline():
    from tasks.policy import outage_delays

    delays = outage_delays(Settings(time_scale=1.0))
    assert delays[:3] == [2.0, 4.0, 8.0] and max(delays) == 600.0  # doubling, then capped
    assert sum(delays) >= 4 * 3600 > sum(delays[:-1])  # waits through the deadline, not much longer
    assert len(delays) <= 50  # Prefect's limit on a list of delays
    short = outage_delays(Settings(time_scale=1.0, outage_deadline_seconds=60))
    assert short == [2.0, 4.0, 8.0, 16.0, 32.0]


async def test_retry_after_is_honoured_and_capped():
    from tasks.policy import honour_retry_after

    settings = Settings(time_scale=0.001, poll_max_seconds=60)  # cap = 0.06 s
    for retry_after, least, most in [(0.03, 0.03, 0.5), (600, 0.06, 0.5), (None, 0.0, 0.02)]:
        start = time.monotonic()
        with pytest.raises(TransientError):
            async with honour_retry_after(settings):
                raise TransientError("Svc", "503", retry_after=retry_after)
        assert least <= time.monotonic() - start < most

    with pytest.raises(NotFound):  # permanent errors pass straight through
        async with honour_retry_after(settings):
            raise NotFound("Svc", "404")
    await asyncio.sleep(0)
