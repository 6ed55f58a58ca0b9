"""DocumentExchange simulator, in process: endpoints, status codes, budgets, faults and /_sim."""

from __future__ import annotations

import asyncio
import io
import zipfile

import httpx
import pytest
from fastapi import FastAPI

from patient_docs.simulators.docexchange import create_docexchange_app


def _names(unique: str) -> dict[str, str]:
    return {"first_name": f"Ann{unique}", "last_name": f"Lee{unique}"}


async def _search(client: httpx.AsyncClient, unique: str) -> str:
    r = await client.post("/v1/searches", json=_names(unique))
    assert r.status_code == 202
    return r.json()["job_id"]


async def test_search_lifecycle_and_download(de_client: httpx.AsyncClient, de_app: FastAPI, clock, unique) -> None:
    de_app.state.sim.set_patient(f"Ann{unique}", f"Lee{unique}", files=7)
    r = await de_client.post("/v1/searches", json=_names(unique))
    assert r.status_code == 202
    job = r.json()
    assert job == {"job_id": job["job_id"], "status": "pending", "archive_url": None, "error": None}

    r = await de_client.get(f"/v1/searches/{job['job_id']}")
    assert r.status_code == 200 and r.json()["status"] == "pending"
    clock.advance(5)
    assert (await de_client.get(f"/v1/searches/{job['job_id']}")).json() == {**job, "status": "running"}
    clock.advance(5)
    done = (await de_client.get(f"/v1/searches/{job['job_id']}")).json()
    assert done["status"] == "completed" and done["error"] is None
    assert done["archive_url"].startswith("http://docexchange.test/v1/archives/")

    r = await de_client.get(done["archive_url"])
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/zip"
    assert len(zipfile.ZipFile(io.BytesIO(r.content)).namelist()) == 7


async def test_unknown_ids_are_404(de_client: httpx.AsyncClient, unique) -> None:
    assert (await de_client.get(f"/v1/searches/{unique}")).status_code == 404
    assert (await de_client.get(f"/v1/archives/{unique}")).status_code == 404


@pytest.mark.parametrize(
    "body",
    [{}, {"first_name": "A"}, {"first_name": "", "last_name": "B"}, {"first_name": "A", "last_name": "x" * 201}],
)
async def test_invalid_search_is_422(de_client: httpx.AsyncClient, body: dict[str, str]) -> None:
    assert (await de_client.post("/v1/searches", json=body)).status_code == 422


async def test_failed_jobs(de_client: httpx.AsyncClient, de_app: FastAPI, clock, unique) -> None:
    de_app.state.sim.set_patient(f"Ann{unique}", f"Lee{unique}", fail_jobs=1, job_seconds=1)
    first, second = await _search(de_client, unique), await _search(de_client, unique)
    clock.advance(1)
    failed = (await de_client.get(f"/v1/searches/{first}")).json()
    assert failed["status"] == "failed" and failed["error"] and failed["archive_url"] is None
    assert (await de_client.get(f"/v1/searches/{second}")).json()["status"] == "completed"


async def test_default_file_count_is_stable_and_capped(make_settings) -> None:
    sim = create_docexchange_app(make_settings()).state.sim
    counts = [sim.default_files(f"F{i}", f"L{i}") for i in range(400)]
    assert counts == [sim.default_files(f"F{i}", f"L{i}") for i in range(400)]
    assert 0 in counts and max(counts) <= 200
    assert sum(c <= 30 for c in counts) > 0.9 * len(counts)
    capped = create_docexchange_app(make_settings(sim_max_files=3)).state.sim
    assert max(capped.default_files(f"F{i}", f"L{i}") for i in range(400)) == 3


async def test_hostile_archive_via_sim_endpoint(de_client: httpx.AsyncClient, clock, unique) -> None:
    body = {**_names(unique), "files": 2, "hostile": "dotdot", "job_seconds": 0}
    r = await de_client.post("/_sim/patients", json=body)
    assert r.status_code == 200 and r.json()["hostile"] == "dotdot"
    job = (await de_client.get(f"/v1/searches/{await _search(de_client, unique)}")).json()
    data = (await de_client.get(job["archive_url"])).content
    assert "../evil.txt" in zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert (await de_client.post("/_sim/patients", json={**body, "hostile": "nope"})).status_code == 422


async def test_transfer_burst_gets_one_429(de_client: httpx.AsyncClient, unique) -> None:
    responses = await asyncio.gather(
        *[de_client.post("/v1/searches", json=_names(f"{unique}{i}")) for i in range(6)],
        *[de_client.get(f"/v1/archives/{unique}{i}") for i in range(5)],
    )
    limited = [r for r in responses if r.status_code == 429]
    assert len(limited) == 1
    assert limited[0].headers["Retry-After"] == "60"  # fake clock: all 11 arrived at the same instant
    stats = (await de_client.get("/_sim/stats")).json()
    assert stats["budgets"]["transfer"] == {"budget": "10/60s", "arrivals": 11, "rejected": 1, "max_in_any_window": 11}
    assert stats["budgets"]["poll"]["arrivals"] == 0
    assert stats["requests"] == {"POST /v1/searches": 6, "GET /v1/archives/{archive_id}": 5}


async def test_poll_burst_gets_one_429_and_recovers(de_client: httpx.AsyncClient, clock, unique) -> None:
    job_id = await _search(de_client, unique)
    responses = await asyncio.gather(*[de_client.get(f"/v1/searches/{job_id}") for _ in range(11)])
    assert sorted(r.status_code for r in responses) == [200] * 10 + [429]
    assert next(r for r in responses if r.status_code == 429).headers["Retry-After"] == "1"
    clock.advance(1)
    assert (await de_client.get(f"/v1/searches/{job_id}")).status_code == 200
    poll = (await de_client.get("/_sim/stats")).json()["budgets"]["poll"]
    assert poll == {"budget": "10/1s", "arrivals": 12, "rejected": 1, "max_in_any_window": 11}


async def test_outage_503_then_clears(de_client: httpx.AsyncClient, clock, unique) -> None:
    r = await de_client.post("/_sim/faults", json={"outage": {"mode": "503", "seconds": 5, "retry_after": 3}})
    assert r.status_code == 200 and r.json()["outages"][0]["mode"] == "503"
    r = await de_client.post("/v1/searches", json=_names(unique))
    assert r.status_code == 503 and r.headers["Retry-After"] == "3"
    clock.advance(5)
    assert (await de_client.post("/v1/searches", json=_names(unique))).status_code == 202
    stats = (await de_client.get("/_sim/stats")).json()
    assert stats["budgets"]["transfer"]["arrivals"] == 2 and stats["faulted"] == 1


async def test_outage_without_retry_after_restricted_to_prefix(de_client: httpx.AsyncClient, unique) -> None:
    await de_client.post("/_sim/faults", json={"outage": {"mode": "503", "seconds": 5, "path_prefix": "/v1/archives"}})
    r = await de_client.get(f"/v1/archives/{unique}")
    assert r.status_code == 503 and "Retry-After" not in r.headers
    assert (await de_client.post("/v1/searches", json=_names(unique))).status_code == 202
    r = await de_client.post("/_sim/faults", json={"clear": True})
    assert r.json()["outages"] == []
    assert (await de_client.get(f"/v1/archives/{unique}")).status_code == 404


async def test_random_503(de_client: httpx.AsyncClient, unique) -> None:
    await de_client.post("/_sim/faults", json={"random_503": 1.0, "random_503_retry_after": 2})
    r = await de_client.get(f"/v1/searches/{unique}")
    assert r.status_code == 503 and r.headers["Retry-After"] == "2"
    await de_client.post("/_sim/faults", json={"random_503": 0.0})
    assert (await de_client.get(f"/v1/searches/{unique}")).status_code == 404


async def test_drop_in_process_raises_transport_error(de_client: httpx.AsyncClient, unique) -> None:
    await de_client.post("/_sim/faults", json={"outage": {"mode": "drop", "seconds": 5}})
    with pytest.raises(httpx.RemoteProtocolError):
        await de_client.get(f"/v1/searches/{unique}")


async def test_reset_forgets_everything(de_client: httpx.AsyncClient, de_app: FastAPI, unique) -> None:
    job_id = await _search(de_client, unique)
    await de_client.post("/_sim/faults", json={"random_503": 0.5})
    assert (await de_client.post("/_sim/reset")).json() == {"ok": True}
    assert (await de_client.get(f"/v1/searches/{job_id}")).status_code == 404
    stats = (await de_client.get("/_sim/stats")).json()
    assert stats["budgets"]["transfer"]["arrivals"] == 0 and stats["budgets"]["poll"]["arrivals"] == 1
    assert de_app.state.sim.faults.random_503 == 0
