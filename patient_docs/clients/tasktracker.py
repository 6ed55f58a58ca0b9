"""TaskTracker: one entry per patient run, its status, its report."""

from __future__ import annotations

import httpx

from patient_docs.clients.http import request
from patient_docs.models import DocumentsStatus, Report, Task

SERVICE = "TaskTracker"


class TaskTrackerClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str):
        self._http = http
        self._base = httpx.URL(base_url)

    async def create_task(self, patient_id: str, first_name: str, last_name: str, *, idempotency_key: str) -> Task:
        """POST /v1/tasks; a retry with the same key returns the first entry."""
        body = {"patient_id": patient_id, "first_name": first_name, "last_name": last_name}
        return await self._task("POST", "/v1/tasks", json=body, headers={"Idempotency-Key": idempotency_key})

    async def get_task(self, task_id: str) -> Task:
        return await self._task("GET", f"/v1/tasks/{task_id}")

    async def set_status(self, task_id: str, status: DocumentsStatus) -> Task:
        """PATCH /v1/tasks/{id}; setting the same status twice is harmless."""
        return await self._task("PATCH", f"/v1/tasks/{task_id}", json={"status": str(status)})

    async def append_report(self, task_id: str, report: Report, *, idempotency_key: str) -> Task:
        """POST /v1/tasks/{id}/reports; a retry with the same key appends nothing."""
        return await self._task(
            "POST", f"/v1/tasks/{task_id}/reports",
            json=report.model_dump(), headers={"Idempotency-Key": idempotency_key},
        )

    async def _task(self, method: str, path: str, **kwargs: object) -> Task:
        response = await request(SERVICE, self._http, method, self._base.join(path), **kwargs)
        return Task.model_validate(response.json())
