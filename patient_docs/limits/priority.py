"""Priority across processes: a process with high-priority waiters raises a marker that others respect.

Each named limit has a companion Prefect limit `<name>-high-waiting`. A process whose queue for
a limit starts with a high-priority waiter holds one leased slot of that companion; a process
whose next waiter is low-priority does not try to take a slot while any other process holds
the marker. The next freed slot therefore goes to a high-priority run, wherever it waits; the
marker only reorders acquisitions, so exactness is untouched, and nobody stands idle: the
high-priority waiter polls as often as everyone else did.
"""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

from prefect.client.orchestration import PrefectClient

HIGH = 1  # priorities at or above this are interactive; backfill runs use 0
MARKER_SLOTS = 100_000
# A marker read is reused this long: a busy process would otherwise read it before every attempt.
# A high-priority waiter elsewhere is therefore seen at most this late (a fraction of a poll interval).
_FRESH = 0.2


def marker_name(limit: str) -> str:
    return f"{limit}-high-waiting"


class Markers:
    """The companion-limit leases this process holds, one per limit at most."""

    def __init__(self, client: PrefectClient):
        self._client = client
        self._held: dict[str, UUID] = {}
        self._seen: dict[str, tuple[float, bool]] = {}  # limit -> (read at, others waiting)
        self._reading: dict[str, asyncio.Future] = {}

    async def raise_(self, limit: str) -> None:
        if limit not in self._held:
            response = await self._client.increment_concurrency_slots_with_lease(
                names=[marker_name(limit)], slots=1, mode="concurrency", lease_duration=60.0
            )
            self._held[limit] = UUID(response.json()["lease_id"])

    async def lower(self, limit: str) -> None:
        lease_id = self._held.pop(limit, None)
        if lease_id is not None:
            await self._client.release_concurrency_slots_with_lease(lease_id)

    async def renew(self) -> None:
        for lease_id in list(self._held.values()):
            await self._client.renew_concurrency_lease(lease_id, 60.0)

    def cached(self, limit: str) -> bool | None:
        """The last read if still fresh, else None."""
        read_at, others = self._seen.get(limit, (0.0, False))
        return others if time.monotonic() - read_at <= _FRESH else None

    def holds(self, limit: str) -> bool:
        return limit in self._held

    async def others_waiting(self, limit: str) -> bool:
        """Whether a high-priority run waits for `limit` in another process (read at most every _FRESH s).

        Concurrent callers share one read in flight.
        """
        read_at, others = self._seen.get(limit, (0.0, False))
        if time.monotonic() - read_at <= _FRESH:
            return others
        reading = self._reading.get(limit)
        if reading is None:
            reading = self._reading[limit] = asyncio.ensure_future(self._read(limit))
            reading.add_done_callback(lambda _: self._reading.pop(limit, None))
        return await asyncio.shield(reading)

    async def _read(self, limit: str) -> bool:
        marker = await self._client.read_global_concurrency_limit_by_name(marker_name(limit))
        others = marker.active_slots > (1 if limit in self._held else 0)
        self._seen[limit] = (time.monotonic(), others)
        return others
