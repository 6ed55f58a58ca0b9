"""TaskTracker simulator: in-memory tasks with idempotent writes, one budget, latency and faults."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, HTTPException, Response
from pydantic import BaseModel

from patient_docs.settings import Settings
from patient_docs.simulators.common import (
    SimCore,
    SimMiddleware,
    add_sim_routes,
    install_contract_openapi,
    limit_responses,
)

TaskStatus = Literal["NEW", "DOCUMENTS_FOUND", "DOCUMENTS_NOT_FOUND"]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


class TaskCreate(BaseModel):
    patient_id: str
    first_name: str
    last_name: str


class TaskStatusUpdate(BaseModel):
    status: Literal["DOCUMENTS_FOUND", "DOCUMENTS_NOT_FOUND"]


class Report(BaseModel):
    title: str = ""
    documents: list[str]
    body: str = ""


class Task(BaseModel):
    task_id: str
    patient_id: str
    first_name: str = ""
    last_name: str = ""
    status: TaskStatus
    reports: list[Report]


def _classify(method: str, path: str) -> tuple[str | None, str]:
    # Every request counts against the one budget; labels group IDs for the per-path stats.
    parts = path.strip("/").split("/")
    if parts[:2] == ["v1", "tasks"] and len(parts) > 2:
        path = "/v1/tasks/{task_id}" + "".join(f"/{p}" for p in parts[3:])
    return "tasktracker", f"{method} {path}"


class TaskTrackerSim(SimCore):
    """State of the TaskTracker simulator (app.state.sim)."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] | None = None, seed: int | None = None):
        super().__init__(settings, {"tasktracker": settings.tasktracker_limit}, _classify, clock=clock, seed=seed)
        self.tasks: dict[str, Task] = {}
        self.replays: dict[tuple[str, ...], Task] = {}

    def reset(self) -> None:
        """Forget tasks, idempotency keys and counts."""
        super().reset()
        self.tasks, self.replays = {}, {}

    def get(self, task_id: str) -> Task:
        """The task, or 404."""
        task = self.tasks.get(task_id)
        if task is None:
            raise HTTPException(404, "unknown task id")
        return task

    def idempotent(
        self, scope: tuple[str, ...], key: str | None, response: Response, write: Callable[[], Task]
    ) -> Task:
        """Run `write` once per key; a repeat gets the first result with 200."""
        if key is not None and (scope + (key,)) in self.replays:
            response.status_code = 200
            return self.replays[scope + (key,)]
        result = write().model_copy(deep=True)
        if key is not None:
            self.replays[scope + (key,)] = result
        return result


def create_tasktracker_app(
    settings: Settings, *, clock: Callable[[], float] | None = None, seed: int | None = None
) -> FastAPI:
    """A FastAPI app that implements tasktracker.openapi.yaml."""
    app = FastAPI(title="TaskTracker", version="1.0", separate_input_output_schemas=False)
    sim = TaskTrackerSim(settings, clock=clock, seed=seed)
    app.state.sim = sim
    replay = {200: {"model": Task, "description": "Replay of an earlier request with the same Idempotency-Key."}}
    invalid = {422: {"description": "Invalid body."}}
    unknown = {404: {"description": "Unknown task id."}}

    @app.post(
        "/v1/tasks",
        status_code=201,
        operation_id="createTask",
        summary="Create a new entry for a patient.",
        response_model=Task,
        responses={201: {"description": "Created."}} | replay | invalid | limit_responses(),
    )
    async def create_task(body: TaskCreate, response: Response, key: IdempotencyKey = None) -> Task:
        def write() -> Task:
            task = Task(task_id=uuid.uuid4().hex, status="NEW", reports=[], **body.model_dump())
            sim.tasks[task.task_id] = task
            return task

        return sim.idempotent(("create",), key, response, write)

    @app.get(
        "/v1/tasks/{task_id}",
        operation_id="getTask",
        response_model=Task,
        responses={200: {"description": "The entry."}} | unknown | limit_responses(),
    )
    async def get_task(task_id: str) -> Task:
        return sim.get(task_id)

    @app.patch(
        "/v1/tasks/{task_id}",
        operation_id="updateTaskStatus",
        summary="Set the entry's status.",
        response_model=Task,
        responses={200: {"description": "Updated."}} | unknown | invalid | limit_responses(),
    )
    async def update_task_status(task_id: str, body: TaskStatusUpdate) -> Task:
        task = sim.get(task_id)
        task.status = body.status
        return task

    @app.post(
        "/v1/tasks/{task_id}/reports",
        status_code=201,
        operation_id="appendReport",
        summary="Append a report to the entry.",
        response_model=Task,
        responses={201: {"description": "Appended."}} | replay | unknown | invalid | limit_responses(),
    )
    async def append_report(task_id: str, body: Report, response: Response, key: IdempotencyKey = None) -> Task:
        def write() -> Task:
            task = sim.get(task_id)
            task.reports.append(body)
            return task

        return sim.idempotent(("report", task_id), key, response, write)

    @app.get("/_sim/tasks", include_in_schema=False)
    async def sim_tasks() -> list[dict[str, Any]]:
        return [task.model_dump() for task in sim.tasks.values()]

    add_sim_routes(app, sim)
    app.add_middleware(SimMiddleware, core=sim)
    install_contract_openapi(app)
    return app
