"""TaskTracker simulator, in process: tasks, idempotent writes, the budget and /_sim."""

from __future__ import annotations

import asyncio

import httpx
import pytest


def _create_body(unique: str) -> dict[str, str]:
    return {"patient_id": f"p-{unique}", "first_name": f"Ann{unique}", "last_name": f"Lee{unique}"}


async def test_task_lifecycle(tt_client: httpx.AsyncClient, unique) -> None:
    r = await tt_client.post("/v1/tasks", json=_create_body(unique))
    assert r.status_code == 201
    task = r.json()
    assert task == {**_create_body(unique), "task_id": task["task_id"], "status": "NEW", "reports": []}
    assert (await tt_client.get(f"/v1/tasks/{task['task_id']}")).json() == task

    r = await tt_client.patch(f"/v1/tasks/{task['task_id']}", json={"status": "DOCUMENTS_FOUND"})
    assert r.status_code == 200 and r.json()["status"] == "DOCUMENTS_FOUND"

    report = {"title": "Documents", "documents": ["a.pdf", "b.pdf"], "body": "Two documents."}
    r = await tt_client.post(f"/v1/tasks/{task['task_id']}/reports", json=report)
    assert r.status_code == 201 and r.json()["reports"] == [report]
    r = await tt_client.post(f"/v1/tasks/{task['task_id']}/reports", json={"documents": []})
    assert r.json()["reports"][1] == {"title": "", "documents": [], "body": ""}


async def test_unknown_task_is_404(tt_client: httpx.AsyncClient, unique) -> None:
    assert (await tt_client.get(f"/v1/tasks/{unique}")).status_code == 404
    assert (await tt_client.patch(f"/v1/tasks/{unique}", json={"status": "DOCUMENTS_FOUND"})).status_code == 404
    assert (await tt_client.post(f"/v1/tasks/{unique}/reports", json={"documents": []})).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/tasks", {"patient_id": "p"}),
        ("PATCH", "/v1/tasks/{id}", {"status": "NEW"}),
        ("PATCH", "/v1/tasks/{id}", {}),
        ("POST", "/v1/tasks/{id}/reports", {"title": "no documents"}),
    ],
)
async def test_invalid_bodies_are_422(tt_client: httpx.AsyncClient, unique, method: str, path: str, body) -> None:
    task_id = (await tt_client.post("/v1/tasks", json=_create_body(unique))).json()["task_id"]
    r = await tt_client.request(method, path.format(id=task_id), json=body)
    assert r.status_code == 422


async def test_create_replay_returns_first_result(tt_client: httpx.AsyncClient, unique) -> None:
    headers = {"Idempotency-Key": f"create-{unique}"}
    first = await tt_client.post("/v1/tasks", json=_create_body(unique), headers=headers)
    again = await tt_client.post("/v1/tasks", json=_create_body(unique), headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    tasks = (await tt_client.get("/_sim/tasks")).json()
    assert [t["task_id"] for t in tasks] == [first.json()["task_id"]]
    # Without a key every POST creates.
    await tt_client.post("/v1/tasks", json=_create_body(unique))
    assert len((await tt_client.get("/_sim/tasks")).json()) == 2


async def test_concurrent_replays_create_once(tt_client: httpx.AsyncClient, unique) -> None:
    headers = {"Idempotency-Key": f"race-{unique}"}
    responses = await asyncio.gather(
        *[tt_client.post("/v1/tasks", json=_create_body(unique), headers=headers) for _ in range(5)]
    )
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 201]
    assert len({r.json()["task_id"] for r in responses}) == 1
    assert len((await tt_client.get("/_sim/tasks")).json()) == 1


async def test_report_replay_appends_once(tt_client: httpx.AsyncClient, unique) -> None:
    task_id = (await tt_client.post("/v1/tasks", json=_create_body(unique))).json()["task_id"]
    headers = {"Idempotency-Key": f"report-{unique}"}
    report = {"title": "t", "documents": ["x.pdf"], "body": "b"}
    first = await tt_client.post(f"/v1/tasks/{task_id}/reports", json=report, headers=headers)
    await tt_client.patch(f"/v1/tasks/{task_id}", json={"status": "DOCUMENTS_FOUND"})
    again = await tt_client.post(f"/v1/tasks/{task_id}/reports", json=report, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()  # the first result, not the current state
    current = (await tt_client.get(f"/v1/tasks/{task_id}")).json()
    assert current["reports"] == [report] and current["status"] == "DOCUMENTS_FOUND"


async def test_keys_are_scoped_per_operation(tt_client: httpx.AsyncClient, unique) -> None:
    headers = {"Idempotency-Key": f"shared-{unique}"}
    created = await tt_client.post("/v1/tasks", json=_create_body(unique), headers=headers)
    task_id = created.json()["task_id"]
    r = await tt_client.post(f"/v1/tasks/{task_id}/reports", json={"documents": []}, headers=headers)
    assert r.status_code == 201 and len(r.json()["reports"]) == 1


async def test_key_longer_than_255_is_422(tt_client: httpx.AsyncClient, unique) -> None:
    r = await tt_client.post("/v1/tasks", json=_create_body(unique), headers={"Idempotency-Key": "k" * 256})
    assert r.status_code == 422


async def test_burst_gets_one_429(tt_client: httpx.AsyncClient, clock, unique) -> None:
    task_id = (await tt_client.post("/v1/tasks", json=_create_body(unique))).json()["task_id"]
    responses = await asyncio.gather(
        *[tt_client.get(f"/v1/tasks/{task_id}") for _ in range(5)],
        *[tt_client.patch(f"/v1/tasks/{task_id}", json={"status": "DOCUMENTS_NOT_FOUND"}) for _ in range(5)],
    )
    limited = [r for r in responses if r.status_code == 429]
    assert len(limited) == 1 and limited[0].headers["Retry-After"] == "1"
    clock.advance(1)
    assert (await tt_client.get(f"/v1/tasks/{task_id}")).status_code == 200
    stats = (await tt_client.get("/_sim/stats")).json()
    assert stats["budgets"]["tasktracker"] == {
        "budget": "10/1s", "arrivals": 12, "rejected": 1, "max_in_any_window": 11,
    }
    assert stats["requests"] == {"POST /v1/tasks": 1, "GET /v1/tasks/{task_id}": 6, "PATCH /v1/tasks/{task_id}": 5}


async def test_outage_and_reset(tt_client: httpx.AsyncClient, clock, unique) -> None:
    await tt_client.post("/v1/tasks", json=_create_body(unique))
    await tt_client.post("/_sim/faults", json={"outage": {"mode": "503", "seconds": 2}})
    r = await tt_client.post("/v1/tasks", json=_create_body(unique))
    assert r.status_code == 503 and "Retry-After" not in r.headers
    clock.advance(2)
    assert (await tt_client.post("/_sim/reset")).status_code == 200
    assert (await tt_client.get("/_sim/tasks")).json() == []
    assert (await tt_client.get("/_sim/stats")).json()["budgets"]["tasktracker"]["arrivals"] == 0
