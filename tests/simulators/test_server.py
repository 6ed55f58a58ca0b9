"""Simulators on loopback: startup, real connection drops and hangs, concurrent bursts."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from patient_docs.simulators.docexchange import create_docexchange_app
from patient_docs.simulators.server import SimulatorServer, run_simulators
from patient_docs.simulators.tasktracker import create_tasktracker_app


def test_server_starts_on_a_free_port_and_stops(make_settings, unique) -> None:
    with SimulatorServer(create_tasktracker_app(make_settings())) as server:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{server.url}/v1/tasks/{unique}").status_code == 404
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/v1/tasks/{unique}", timeout=1)


def test_run_simulators_end_to_end(make_settings, unique) -> None:
    settings = make_settings(sim_job_seconds=0.0)
    with run_simulators(settings) as (de_url, tt_url, de_app, tt_app), httpx.Client() as client:
        de_app.state.sim.set_patient(f"A{unique}", f"B{unique}", files=4)
        job = client.post(f"{de_url}/v1/searches", json={"first_name": f"A{unique}", "last_name": f"B{unique}"})
        status = client.get(f"{de_url}/v1/searches/{job.json()['job_id']}").json()
        assert status["status"] == "completed" and status["archive_url"].startswith(f"{de_url}/v1/archives/")
        archive = client.get(status["archive_url"])
        assert archive.status_code == 200 and archive.content[:2] == b"PK"
        task = client.post(f"{tt_url}/v1/tasks", json={"patient_id": unique, "first_name": "A", "last_name": "B"})
        assert task.status_code == 201
        assert tt_app.state.sim.tasks[task.json()["task_id"]].patient_id == unique


def test_drop_is_a_transport_error(make_settings, unique) -> None:
    app = create_docexchange_app(make_settings())
    with SimulatorServer(app) as server, httpx.Client(base_url=server.url) as client:
        app.state.sim.faults.set_outage("drop", 30, path_prefix="/v1/searches")
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/v1/searches", json={"first_name": "A", "last_name": unique})
        with pytest.raises(httpx.TransportError):
            client.get(f"/v1/searches/{unique}")
        assert client.get(f"/v1/archives/{unique}").status_code == 404
        app.state.sim.faults.clear()
        assert client.get(f"/v1/searches/{unique}").status_code == 404
        assert app.state.sim.stats()["budgets"]["poll"]["arrivals"] == 2


def test_hang_outlasts_the_client_timeout(make_settings, unique) -> None:
    app = create_tasktracker_app(make_settings())
    with SimulatorServer(app) as server, httpx.Client(base_url=server.url, timeout=0.2) as client:
        client.post(f"{server.url}/_sim/faults", json={"outage": {"mode": "hang", "seconds": 30}})
        with pytest.raises(httpx.ReadTimeout):
            client.get(f"/v1/tasks/{unique}")
        client.post(f"{server.url}/_sim/faults", json={"clear": True})
        assert client.get(f"/v1/tasks/{unique}").status_code == 404


async def test_concurrent_loopback_burst_gets_one_429(make_settings, unique) -> None:
    # Real clock and random latency: all 11 still arrive well within the 60 s window.
    app = create_docexchange_app(make_settings(sim_latency_max=0.02))
    with SimulatorServer(app) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            responses = await asyncio.gather(
                *[client.post("/v1/searches", json={"first_name": f"A{i}", "last_name": unique}) for i in range(11)]
            )
            stats = (await client.get("/_sim/stats")).json()
    limited = [r for r in responses if r.status_code == 429]
    assert len(limited) == 1 and 59 <= int(limited[0].headers["Retry-After"]) <= 60
    assert stats["budgets"]["transfer"] == {"budget": "10/60s", "arrivals": 11, "rejected": 1, "max_in_any_window": 11}
