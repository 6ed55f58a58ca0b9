"""What both simulators share: budgets, latency, faults middleware, /_sim routes and the OpenAPI shape."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from patient_docs.settings import Budget, Settings
from patient_docs.simulators.faults import Faults, FaultsIn, drop_connection, hang
from patient_docs.simulators.window import RollingWindow

# (method, path) -> (budget name or None, label for per-path stats)
Classifier = Callable[[str, str], tuple[str | None, str]]

def limit_responses() -> dict[int | str, dict[str, Any]]:
    """The 429 and 503 responses of every contract operation (a fresh dict: FastAPI may modify it)."""
    retry_after = {"Retry-After": {"schema": {"type": "integer", "minimum": 0}}}
    return {
        429: {"description": "Over a budget. Retry-After says when to try again.", "headers": retry_after},
        503: {"description": "Outage. Retry-After, when present, says when to try again.", "headers": retry_after},
    }


class SimCore:
    """Budgets, latency, faults and request counts of one simulated service."""

    def __init__(
        self,
        settings: Settings,
        budgets: dict[str, Budget],
        classify: Classifier,
        *,
        clock: Callable[[], float] | None = None,
        seed: int | None = None,
    ) -> None:
        self.settings = settings
        self.budgets = budgets
        self.classify = classify
        self.clock = clock or time.monotonic
        self.rng = random.Random(seed)
        self.faults = Faults(self.clock, self.rng, default_hang_seconds=settings.request_timeout + 5)
        self.reset_counters()

    def reset_counters(self) -> None:
        """Fresh budget windows and request counts; faults cleared."""
        self.windows = {name: RollingWindow(b, self.clock) for name, b in self.budgets.items()}
        self.requests: Counter[str] = Counter()
        self.faults.clear()
        self.faults.faulted = 0

    def reset(self) -> None:
        """Forget everything; services extend this with their own state."""
        self.reset_counters()

    def latency(self) -> float:
        """One random network delay in seconds."""
        low, high = self.settings.sim_latency_min, self.settings.sim_latency_max
        return self.rng.uniform(low, max(low, high))

    def stats(self) -> dict[str, Any]:
        """Per budget counts, requests per path and the faulted count."""
        return {
            "budgets": {name: w.stats() for name, w in self.windows.items()},
            "requests": dict(self.requests),
            "faulted": self.faults.faulted,
        }


async def _send_json(send: Send, status: int, detail: str, retry_after: int | None) -> None:
    headers = [(b"content-type", b"application/json")]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps({"detail": detail}).encode()})


class SimMiddleware:
    """Latency in, count the arrival, apply faults and budgets, latency out; /_sim is exempt."""

    def __init__(self, app: ASGIApp, core: SimCore) -> None:
        self.app = app
        self.core = core

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sim"):
            await self.app(scope, receive, send)
            return
        core = self.core
        await asyncio.sleep(core.latency())
        # No await between counting and deciding, so concurrent requests see a consistent window.
        budget, label = core.classify(scope["method"], scope["path"])
        core.requests[label] += 1
        window = core.windows.get(budget) if budget else None
        allowed = window.hit() if window else True
        retry_after = window.retry_after() if window and not allowed else None
        fault = core.faults.check(scope["path"])
        if fault is not None:
            if fault.mode == "drop":
                await drop_connection(receive)
            elif fault.mode == "hang":
                await hang(receive, fault.hang_seconds)
                await drop_connection(receive)
            else:
                await asyncio.sleep(core.latency())
                await _send_json(send, 503, "service unavailable (simulated outage)", fault.retry_after)
            return
        if not allowed:
            await asyncio.sleep(core.latency())
            await _send_json(send, 429, f"over the {budget} budget {window.budget}", retry_after)
            return

        async def delayed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                await asyncio.sleep(core.latency())
            await send(message)

        await self.app(scope, receive, delayed_send)


def add_sim_routes(app: FastAPI, core: SimCore) -> None:
    """The operator endpoints every simulator has: stats, faults and reset."""

    @app.get("/_sim/stats", include_in_schema=False)
    async def sim_stats() -> dict[str, Any]:
        return core.stats()

    @app.post("/_sim/faults", include_in_schema=False)
    async def sim_faults(body: FaultsIn) -> dict[str, Any]:
        return core.faults.apply(body)

    @app.post("/_sim/reset", include_in_schema=False)
    async def sim_reset() -> dict[str, bool]:
        core.reset()
        return {"ok": True}


def install_contract_openapi(app: FastAPI) -> None:
    """Generate OpenAPI without FastAPI's automatic 422 on operations that take no body."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                separate_input_output_schemas=app.separate_input_output_schemas,
            )
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    if "requestBody" not in operation:
                        operation.get("responses", {}).pop("422", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
