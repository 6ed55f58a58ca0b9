"""Fault injection shared by the simulators: outages (503, drop, hang) and random 503s."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field

FaultMode = Literal["503", "drop", "hang"]


@dataclass(frozen=True)
class Fault:
    """What to do to one request: answer 503, drop the connection, or hang."""

    mode: FaultMode
    retry_after: int | None = None
    hang_seconds: float = 60.0


@dataclass
class Outage:
    """One outage window, optionally restricted to paths starting with `path_prefix`."""

    mode: FaultMode
    until: float
    path_prefix: str | None = None
    retry_after: int | None = None
    hang_seconds: float = 60.0


class OutageIn(BaseModel):
    """Body of one outage in POST /_sim/faults."""

    mode: FaultMode = "503"
    seconds: float = Field(gt=0)
    path_prefix: str | None = None
    retry_after: int | None = Field(None, ge=0)
    hang_seconds: float | None = Field(None, gt=0)


class FaultsIn(BaseModel):
    """Body of POST /_sim/faults: clear first (if asked), then add an outage and/or set the 503 rate."""

    clear: bool = False
    outage: OutageIn | None = None
    random_503: float | None = Field(None, ge=0, le=1)
    random_503_retry_after: int | None = Field(None, ge=0)


class Faults:
    """Current faults of one simulated service."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        default_hang_seconds: float = 60.0,
    ) -> None:
        self.clock = clock
        self.rng = rng or random.Random()
        self.default_hang_seconds = default_hang_seconds
        self.outages: list[Outage] = []
        self.random_503 = 0.0
        self.random_503_retry_after: int | None = None
        self.faulted = 0
        self._lock = threading.Lock()

    def set_outage(
        self,
        mode: FaultMode,
        seconds: float,
        *,
        path_prefix: str | None = None,
        retry_after: int | None = None,
        hang_seconds: float | None = None,
    ) -> Outage:
        """Fail matching requests for the next `seconds` seconds."""
        outage = Outage(
            mode, self.clock() + seconds, path_prefix, retry_after, hang_seconds or self.default_hang_seconds
        )
        with self._lock:
            self.outages.append(outage)
        return outage

    def set_random_503(self, rate: float, retry_after: int | None = None) -> None:
        """Answer this fraction of requests with 503."""
        self.random_503, self.random_503_retry_after = rate, retry_after

    def clear(self) -> None:
        """End all outages and random 503s."""
        with self._lock:
            self.outages.clear()
        self.random_503, self.random_503_retry_after = 0.0, None

    def apply(self, body: FaultsIn) -> dict[str, Any]:
        """Apply a POST /_sim/faults body and return the resulting state."""
        if body.clear:
            self.clear()
        if body.outage is not None:
            o = body.outage
            self.set_outage(
                o.mode, o.seconds, path_prefix=o.path_prefix, retry_after=o.retry_after, hang_seconds=o.hang_seconds
            )
        if body.random_503 is not None:
            self.set_random_503(body.random_503, body.random_503_retry_after)
        return self.state()

    def state(self) -> dict[str, Any]:
        """Active outages (with seconds left), random 503 rate and faulted request count."""
        now = self.clock()
        with self._lock:
            self.outages = [o for o in self.outages if o.until > now]
            outages = [asdict(o) | {"seconds_left": o.until - now} for o in self.outages]
        for o in outages:
            del o["until"]
        return {"outages": outages, "random_503": self.random_503, "faulted": self.faulted}

    def check(self, path: str, now: float | None = None) -> Fault | None:
        """The fault for a request to `path` arriving now, if any."""
        now = self.clock() if now is None else now
        with self._lock:
            for o in self.outages:
                if o.until > now and (o.path_prefix is None or path.startswith(o.path_prefix)):
                    self.faulted += 1
                    return Fault(o.mode, o.retry_after, o.hang_seconds)
        if self.random_503 and self.rng.random() < self.random_503:
            self.faulted += 1
            return Fault("503", self.random_503_retry_after)
        return None


async def drop_connection(receive: Callable[..., Any]) -> None:
    """Close the connection without a response; in-process (ASGITransport) raise what a client would see."""
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if not isinstance(transport, asyncio.BaseTransport):
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
    transport.close()
    # Let connection_lost run so uvicorn marks the cycle disconnected and sends no 500.
    for _ in range(3):
        await asyncio.sleep(0)


async def hang(receive: Callable[..., Any], seconds: float) -> None:
    """Send nothing for `seconds`, or until the client gives up and disconnects."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            message = await asyncio.wait_for(receive(), left)
        except TimeoutError:
            return
        if message.get("type") == "http.disconnect":
            return
