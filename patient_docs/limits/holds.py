"""Holding slots: each waits out its window after the response, renewed until it goes back.

Split from the broker, which acquires: here a slot's life after it was granted — its lease kept
alive while held, its release a full window after the response, and what happens at exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from patient_docs.limits.broker import SlotBroker

_RENEW = 10.0  # seconds between lease renewals while a slot is held
# At exit, holds due within this are waited out rather than handed over: Prefect's shortest lease
# is 60 s, so handing over a hold with less left would idle its slot past its window.
_WAIT_AT_EXIT = 60.0
logger = logging.getLogger(__name__)


@dataclass
class Lease:
    """One slot of one limit, held until `release_after` hands it back."""

    name: str
    lease_id: UUID
    broker: "SlotBroker"
    released: bool = False
    renewal: asyncio.Task | None = None
    release_at: float = 0.0
    release_task: asyncio.Task | None = None
    acquired_at: float = 0.0  # when the server granted the slot; handing it on keeps this

    def release_after(self, delay: float) -> None:
        """Give the slot back `delay` seconds from now, without blocking the caller."""
        if not self.released:
            self.released = True
            self.broker._call_soon(self.broker._release(self, delay))


class HoldsMixin:
    """The SlotBroker's half that keeps and gives back granted slots (runs on the broker's loop)."""

    async def _renew(self, lease: Lease) -> None:
        # A lease that lapses frees the slot while we may still be inside its window: keep trying.
        delay = _RENEW
        while True:
            await asyncio.sleep(delay)
            try:
                async with self._api:
                    await self._client.renew_concurrency_lease(lease.lease_id, self._lease_duration(lease.name))
                delay = _RENEW
            except Exception as exc:  # noqa: BLE001 - retried every second until the server answers
                logger.warning("renewing the lease of a %s slot failed (%s); retrying", lease.name, exc)
                delay = 1.0

    async def _release(self, lease: Lease, delay: float) -> None:
        lease.release_at = time.monotonic() + delay
        self._holding[lease.lease_id] = lease

        async def release() -> None:
            await asyncio.sleep(delay)
            self._holding.pop(lease.lease_id, None)
            if await self._hand_on(lease):
                return
            if lease.renewal is not None:
                lease.renewal.cancel()
            for attempt in range(5):
                try:
                    async with self._api:
                        await self._client.release_concurrency_slots_with_lease(lease.lease_id)
                    break
                except Exception:  # noqa: BLE001 - after 5 tries the lease's expiry frees the slot
                    await asyncio.sleep(2**attempt)
            limit = self._limits[lease.name]
            limit.held -= 1
            if limit.waiters:
                # Kept long enough: our own loop tries again only after a poll interval, like every
                # other process, so that one of theirs can take this slot.
                self._loop.call_later(self._poll_interval(lease.name), limit.wake.set)
            else:
                limit.wake.set()

        lease.release_task = self._track(release())

    def _track(self, coro) -> asyncio.Task:
        task = self._loop.create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    def drain(self, timeout: float | None = None) -> None:
        """Wait until every scheduled release has happened (call before the process exits)."""

        async def wait() -> None:
            while any(not t.done() for t in list(self._pending)):
                await asyncio.gather(*list(self._pending), return_exceptions=True)

        self._call_soon(asyncio.wait_for(wait(), timeout)).result()

    def hand_over(self) -> None:
        """Before exit: release soon-free slots ourselves, leave the others to the server's lease expiry.

        A lease can only be renewed for Prefect's 60 s minimum: handing over a slot with 0.2 s left
        would idle it for a minute, so slots due within _WAIT_AT_EXIT seconds are waited out here;
        the others are renewed to their time left, so none comes back early.
        """

        async def renew_all() -> None:
            now = time.monotonic()
            soon = []
            for lease in list(self._holding.values()):
                left = lease.release_at - now
                if left <= _WAIT_AT_EXIT and lease.release_task is not None:
                    soon.append(lease.release_task)
                    continue
                try:
                    await self._client.renew_concurrency_lease(lease.lease_id, max(60.0, left + 1.0))
                except Exception:  # noqa: BLE001 - the lease still expires on its own, only later
                    pass
            if soon:
                await asyncio.wait(soon)

        if self._holding:
            try:
                self._call_soon(asyncio.wait_for(renew_all(), _WAIT_AT_EXIT + 15)).result(timeout=_WAIT_AT_EXIT + 20)
            except (TimeoutError, concurrent.futures.TimeoutError):
                pass  # server unreachable: the leases expire on their own, only later
