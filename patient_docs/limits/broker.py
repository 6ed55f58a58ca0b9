"""One slot broker per process: it acquires Prefect concurrency slots (with leases) for every local waiter.

Why a broker: Prefect's own waiters each poll the server with a Retry-After of up to 30 s, which
leaves a freed slot idle for seconds (85 % of the budget at 10/60 s). Here one loop per limit and
process polls briefly on behalf of all its waiters, in priority order, and tries again the moment
one of its own slots comes back, so a slot freed anywhere is taken within a fraction of a second.
A slot whose window has passed goes straight to the next local waiter (`_hand_on`): under load a
request then costs no Prefect call at all, which is what lets one process drive every budget.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import heapq
import itertools
import random
import threading
import time
from dataclasses import dataclass, field
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client

from patient_docs.limits.budgets import apply_limits, budget_for
from patient_docs.limits.holds import _RENEW, HoldsMixin, Lease, logger
from patient_docs.limits.priority import HIGH, Markers, marker_name
from patient_docs.settings import Settings


# Low-priority grants of one limit are at least this fraction of window/count apart (see _pace):
# under 1, so that jitter in when slots come back never makes the pacing the bottleneck.
_PACING = 0.8


class LimitMissing(RuntimeError):
    """The named limit does not exist on the Prefect server, so nothing would be limited."""


@dataclass
class _Limit:
    name: str
    waiters: list = field(default_factory=list)  # heap of (-priority, seq, future, queued at)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    held: int = 0  # slots this process holds (in flight or waiting out their window)
    next_low_at: float = 0.0  # earliest time for the next low-priority grant (pacing)
    high_arrived: asyncio.Event = field(default_factory=asyncio.Event)


class SlotBroker(HoldsMixin):
    """Acquires and releases slots on a private event loop thread; usable from any thread or loop."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.api_calls = 0  # acquisition attempts and marker reads: what waiting costs the Prefect API
        self._seq = itertools.count()
        self._limits: dict[str, _Limit] = {}
        self._pending: set[asyncio.Task] = set()
        self._holding: dict[UUID, Lease] = {}  # slots waiting out their window before release
        self._ensured = False
        self._loop = asyncio.new_event_loop()
        # Copy the caller's context so the thread sees the same Prefect settings (test harness, profile).
        ctx = contextvars.copy_context()
        self._thread = threading.Thread(target=ctx.run, args=(self._run,), name="slot-broker", daemon=True)
        self._ready = threading.Event()
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        # One API call at a time from this process: concurrent slot writes only contend for the
        # server's database. Measured (60 TaskTracker requests, SQLite server): 7.1 s with one,
        # 16.6 s with four at a time (locked database, 503s, client back-offs).
        self._api = asyncio.Lock()
        async with get_client() as client:
            self._client = client
            self._markers = Markers(client)
            self._markers_renewed = time.monotonic()
            self._ready.set()
            await self._stop.wait()
            # Holds still pending were handed over to lease expiry (or drained) by reset_broker.
            for task in [*self._pending, *(lease.renewal for lease in self._holding.values() if lease.renewal)]:
                task.cancel()

    def _call_soon(self, coro) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def acquire(self, name: str, priority: float = 0) -> Lease:
        """Wait for a slot of limit `name`; higher priority is served first within this process."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._loop.call_soon_threadsafe(self._enqueue, name, priority, future)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if not future.cancel() and not future.exception():
                future.result().release_after(0)  # granted but never used: no request was sent
            raise

    def _enqueue(self, name: str, priority: float, future: concurrent.futures.Future) -> None:
        limit = self._limits.get(name)
        if limit is None:
            limit = self._limits[name] = _Limit(name)
        heapq.heappush(limit.waiters, (-priority, next(self._seq), future, time.monotonic()))
        if limit.task is None or limit.task.done():
            limit.task = self._loop.create_task(self._serve(limit))
        limit.wake.set()
        if priority >= HIGH:
            limit.high_arrived.set()

    def _poll_interval(self, name: str) -> float:
        window = budget_for(name, self.settings).window
        # A small fraction of the window: the expected idle gap per freed slot is half of this.
        return min(0.5, max(0.1, window / 120))

    def _lease_duration(self, name: str) -> float:
        # A dead holder's slot comes back only after its last request could have arrived plus a
        # full window; renewals every _RENEW seconds keep live holders' leases ahead of that.
        window = budget_for(name, self.settings).window
        return max(60.0, window + self.settings.request_timeout + 2 * _RENEW)

    async def _serve(self, limit: _Limit) -> None:
        while True:
            while limit.waiters:
                self._promote_aged(limit)
                while limit.waiters and limit.waiters[0][2].cancelled():
                    heapq.heappop(limit.waiters)
                if not limit.waiters:
                    break
                limit.wake.clear()  # before trying: a release during the attempt must still wake us
                if await self._pace(limit):
                    continue
                try:
                    lease_id = await self._next_slot(limit, high=-limit.waiters[0][0] >= HIGH)
                except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                    if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code < 500:
                        self._fail_first(limit, exc)
                        continue
                    # The Prefect server is down or restarting (its client already retried for ~1 min):
                    # the waiters keep waiting rather than fail their tasks for an orchestration outage.
                    logger.warning("Prefect API unavailable while waiting for %s (%s); still waiting", limit.name, exc)
                    await asyncio.sleep(5.0)
                    continue
                except Exception as exc:  # noqa: BLE001 - the waiter decides what a failure means
                    self._fail_first(limit, exc)
                    continue
                if lease_id is None:
                    delay = self._poll_interval(limit.name) * random.uniform(0.5, 1.5)
                    if limit.held >= budget_for(limit.name, self.settings).count:
                        # Every slot is ours: they are handed on here or released, and a release wakes us.
                        delay = self._keep_for(limit.name)
                    try:
                        await asyncio.wait_for(limit.wake.wait(), delay)
                    except TimeoutError:
                        pass
                    continue
                # While we asked, a slot handed on here may have served the waiters this one was for.
                popped = self._pop_live(limit)
                lease = Lease(limit.name, lease_id, self, acquired_at=time.monotonic())
                if popped is None:
                    async with self._api:
                        await self._client.release_concurrency_slots_with_lease(lease_id)
                    continue
                future, priority = popped
                lease.renewal = self._loop.create_task(self._renew(lease))
                limit.held += 1
                self._granted(limit, priority)
                future.set_result(lease)
            async with self._api:
                await self._markers.lower(limit.name)
            # No await between this check and returning: a waiter queued from now on finds this
            # task done and starts a new one (_enqueue), so none is left unserved.
            if not limit.waiters:
                return

    @staticmethod
    def _pop_live(limit: _Limit) -> tuple[concurrent.futures.Future, float] | None:
        """The first waiter still waiting, marked running, with its priority; None if there is none."""
        while limit.waiters:
            negated, _, future, _ = heapq.heappop(limit.waiters)
            if not future.cancelled() and future.set_running_or_notify_cancel():
                return future, -negated
        return None

    def _spacing(self, name: str) -> float:
        budget = budget_for(name, self.settings)
        return _PACING * budget.window / budget.count

    async def _pace(self, limit: _Limit) -> bool:
        """Hold a low-priority grant back until `next_low_at`; True if we waited (the queue may have changed).

        Why: a saturated backfill that takes all its slots in one burst frees them in one burst a window
        later, so a high-priority run arriving just after waits most of a window for the next slot. Spacing
        low-priority grants by (a little under) window/count keeps a slot coming free at least every
        window/count, which costs a saturated backfill nothing: its slots cannot cycle faster than that.
        A high-priority waiter is never paced and cuts the wait short.
        """
        delay = limit.next_low_at - time.monotonic()
        if delay <= 0 or not limit.waiters or -limit.waiters[0][0] >= HIGH:
            return False
        limit.high_arrived.clear()
        try:
            await asyncio.wait_for(limit.high_arrived.wait(), delay)
        except TimeoutError:
            pass
        return True

    def _granted(self, limit: _Limit, priority: float) -> None:
        if priority < HIGH:
            limit.next_low_at = time.monotonic() + self._spacing(limit.name)

    async def _hand_on(self, lease: Lease) -> bool:
        """Give a slot whose window has passed straight to the next local waiter, without a Prefect call.

        Exact as before: the slot's last request arrived before its response, a full window ago.
        A low-priority waiter takes it only if no other process has a high-priority waiter; and a
        slot goes back to the server after `_keep_for`, so other processes get their turn.
        """
        limit = self._limits[lease.name]
        if time.monotonic() - lease.acquired_at > self._keep_for(limit.name):
            return False
        while True:
            self._promote_aged(limit)
            if not limit.waiters:
                return False
            if -limit.waiters[0][0] >= HIGH:
                break
            if await self._pace(limit):  # the slot stays ours meanwhile: a high waiter takes it at once
                continue
            try:
                if await self._others_waiting(limit.name):
                    return False
            except Exception:  # noqa: BLE001 - unsure: give the slot back, the serve loop decides
                return False
            if limit.next_low_at <= time.monotonic():  # no other grant while we read
                break
        popped = self._pop_live(limit)
        if popped is None:
            return False
        future, priority = popped
        self._granted(limit, priority)
        future.set_result(Lease(lease.name, lease.lease_id, self, renewal=lease.renewal, acquired_at=lease.acquired_at))
        return True

    def _keep_for(self, name: str) -> float:
        return max(30.0, self.settings.priority_aging_windows * budget_for(name, self.settings).window)

    def _fail_first(self, limit: _Limit, exc: Exception) -> None:
        popped = self._pop_live(limit)
        if popped is not None:
            popped[0].set_exception(exc)

    async def _next_slot(self, limit: _Limit, *, high: bool) -> UUID | None:
        """Try for a slot; a low-priority waiter first leaves it to high-priority runs elsewhere."""
        await self._ensure_limits()
        if high:
            async with self._api:
                await self._markers.raise_(limit.name)
                if time.monotonic() - self._markers_renewed > _RENEW:
                    await self._markers.renew()
                    self._markers_renewed = time.monotonic()
        else:
            if self._markers.holds(limit.name):
                async with self._api:
                    await self._markers.lower(limit.name)
            if await self._others_waiting(limit.name):
                return None
        return await self._try_acquire(limit.name)

    async def _others_waiting(self, name: str) -> bool:
        # A read, outside the write lock: it only reorders acquisitions, and waiting behind the
        # process's queued slot writes for it left handed-on slots idle (0.4 s mean per transfer
        # at 10/3s in the 1000-patient benchmark).
        others = self._markers.cached(name)
        if others is None:
            self.api_calls += 1
            others = await self._markers.others_waiting(name)
        return others

    def _promote_aged(self, limit: _Limit) -> None:
        # No starvation: a low-priority waiter queued longer than the aging time counts as high.
        aging = self.settings.priority_aging_windows * budget_for(limit.name, self.settings).window
        cutoff = time.monotonic() - aging
        # Promoted to the top priority present, it goes first among equals: it queued earlier.
        top = max([HIGH, *(-w[0] for w in limit.waiters)])
        aged = [i for i, w in enumerate(limit.waiters) if -w[0] < top and w[3] < cutoff]
        for i in aged:
            _, seq, future, queued = limit.waiters[i]
            limit.waiters[i] = (-top, seq, future, queued)
        if aged:
            heapq.heapify(limit.waiters)

    async def _try_acquire(self, name: str) -> UUID | None:
        self.api_calls += 1
        try:
            # No client-side retry here: a busy server (503, e.g. SQLite locked) is just another
            # "not now", tried again after the poll interval instead of a 2 s back-off.
            async with self._api:
                with self._no_client_retries():
                    response = await self._client.increment_concurrency_slots_with_lease(
                        names=[name], slots=1, mode="concurrency", lease_duration=self._lease_duration(name)
                    )
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code in (423, 503):
                return None
            raise
        body = response.json()
        if not body.get("limits"):
            raise LimitMissing(f"Prefect limit {name!r} does not exist: run `patient-docs limits apply`")
        return UUID(body["lease_id"])

    async def _ensure_limits(self) -> None:
        # The flow never runs unlimited: a missing limit is created from settings, as `limits apply` does.
        if self._ensured:
            return
        from prefect.exceptions import ObjectNotFound

        from patient_docs.limits.budgets import LIMITS

        for name in [*LIMITS, *map(marker_name, LIMITS)]:
            try:
                await self._client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                await apply_limits(self._client, self.settings)
                break
        self._ensured = True

    def _no_client_retries(self):
        # Prefect's client reads its retry count per request from the settings context. Built once:
        # `temporary_settings` validates a whole settings copy each time (11 % of a backfill's CPU).
        from prefect.context import SettingsContext
        from prefect.settings import PREFECT_CLIENT_MAX_RETRIES

        context = SettingsContext.get()
        base, no_retries = getattr(self, "_no_retry_settings", (None, None))
        if base is not context.settings:
            no_retries = context.settings.copy_with_update(updates={PREFECT_CLIENT_MAX_RETRIES: 0})
            self._no_retry_settings = (context.settings, no_retries)
        return SettingsContext(profile=context.profile, settings=no_retries)



_broker: SlotBroker | None = None
_broker_lock = threading.Lock()


def get_broker(settings: Settings) -> SlotBroker:
    """The process's broker, started on first use."""
    global _broker
    with _broker_lock:
        if _broker is None:
            _broker = SlotBroker(settings)
        return _broker


def reset_broker(*, wait: bool = False) -> None:
    """Stop the process's broker: wait out every hold, or hand the holds over to lease expiry."""
    global _broker
    with _broker_lock:
        broker, _broker = _broker, None
    if broker is not None:
        if wait:
            broker.drain()
        else:
            broker.hand_over()
        broker._loop.call_soon_threadsafe(broker._stop.set)
        broker._thread.join(timeout=10)


atexit.register(reset_broker)
