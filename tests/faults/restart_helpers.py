"""A Prefect server that a test can stop and start again on the same port and PREFECT_HOME."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

MEMORY = "prefect.server.concurrency.lease_storage.memory"
FILESYSTEM = "prefect.server.concurrency.lease_storage.filesystem"


class RestartableServer:
    """`deployments.server.prefect_server` on one fixed port and home, stoppable and restartable.

    `lease_storage` other than the project's default (filesystem) is only for the contrast test;
    `env` is put into os.environ while the server process starts (prefect_server copies os.environ).
    """

    def __init__(self, home: Path, *, port: int | None = None, lease_storage: str | None = None,
                 env: dict[str, str] | None = None):
        from deployments.server import free_port

        self.home = home
        self.port = port or free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.lease_storage = lease_storage
        self.env = env or {}
        self.starts = 0
        self._stack: ExitStack | None = None

    @property
    def running(self) -> bool:
        return self._stack is not None

    def start(self) -> str:
        import deployments.server as server

        assert self._stack is None, "already running"
        saved_env = {key: os.environ.get(key) for key in self.env}
        saved_storage = server.LEASE_STORAGE
        os.environ.update(self.env)
        if self.lease_storage:
            server.LEASE_STORAGE = self.lease_storage  # server_env reads it when the server starts
        stack = ExitStack()
        try:
            api = stack.enter_context(server.prefect_server(self.home, port=self.port))
        except BaseException:
            stack.close()
            raise
        finally:
            server.LEASE_STORAGE = saved_storage
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        assert api == self.api
        self._stack = stack
        self.starts += 1
        return api

    def stop(self, timeout: float = 20) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
            wait_port_free(self.port, timeout)

    def restart(self) -> str:
        self.stop()
        return self.start()

    def log(self) -> str:
        path = self.home / "server.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""


@contextmanager
def restartable_server(home: Path, **kwargs) -> Iterator[RestartableServer]:
    server = RestartableServer(home, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_port_free(port: int, timeout: float) -> None:
    """Until nothing accepts connections on the port any more (the old server is really gone)."""
    deadline = time.monotonic() + timeout
    while port_open(port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"port {port} still accepts connections {timeout:.0f} s after the server stopped")
        time.sleep(0.1)  # readiness poll of a process going away, bounded


def wait_until(condition, timeout: float, what: str, interval: float = 0.25):
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(interval)  # polling an observable condition with a deadline


@contextmanager
def client(api: str):
    """A synchronous Prefect client on `api` (whatever PREFECT_API_URL the session has)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as c:
        yield c


def active_slots(api: str, names) -> dict[str, int]:
    with client(api) as c:
        return {name: c.read_global_concurrency_limit_by_name(name).active_slots for name in names}


def apply_limits(api: str, settings) -> None:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from patient_docs.limits.budgets import apply_limits as apply

    async def run() -> None:
        async with get_client() as c:
            await apply(c, settings)

    with temporary_settings(updates={PREFECT_API_URL: api}):
        asyncio.run(run())


def acquire(api: str, name: str, n: int, lease_duration: float = 60) -> list:
    """n slots of `name`, each with its own lease; returns the lease ids."""
    from uuid import UUID

    leases = []
    with client(api) as c:
        for _ in range(n):
            response = c.increment_concurrency_slots_with_lease(
                names=[name], slots=1, mode="concurrency", lease_duration=lease_duration)
            body = response.json()
            assert body["limits"], f"limit {name} missing"
            leases.append(UUID(body["lease_id"]))
    return leases


def release(api: str, lease_ids) -> None:
    with client(api) as c:
        for lease_id in lease_ids:
            c.release_concurrency_slots_with_lease(lease_id)


BIN = Path(__import__("sys").executable).parent


def backfill_env(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without PATIENT_DOCS_*/PREFECT_*, plus `extra` and a logging config
    that shows prefect.client's retry lines (DEBUG), so a test can see the process retrying the API."""
    import prefect

    base = {k: v for k, v in os.environ.items() if not k.startswith(("PATIENT_DOCS_", "PREFECT_"))}
    packaged = Path(prefect.__file__).parent / "logging" / "logging.yml"
    text = packaged.read_text()
    needle = '  prefect.client:\n    level: "${PREFECT_LOGGING_LEVEL}"'
    assert needle in text, "Prefect's logging.yml changed: update restart_helpers.backfill_env"
    config = tmp_path / "logging.yml"
    config.write_text(text.replace(needle, '  prefect.client:\n    level: DEBUG'))
    return base | {"PREFECT_LOGGING_SETTINGS_PATH": str(config), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"} | extra


_RETRY_LINE = re.compile(r"Encountered retryable exception during request\. .*This is attempt (\d+)/")


def connect_retries(log: Path, attempt: int) -> int:
    """prefect.client's debug lines for a request that failed to reach the API, from `attempt` on."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return sum(int(m.group(1)) >= attempt for m in _RETRY_LINE.finditer(text))


def kill_group(proc) -> None:
    import signal
    import subprocess

    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group (Dask workers)
    except ProcessLookupError:
        pass


async def seed_patients(settings, patients) -> None:
    from patient_docs import clients

    repo = clients.patients(settings)
    await repo.create_schema()
    await repo.upsert_patients(patients)


async def patient_statuses(settings, ids) -> dict:
    from patient_docs import clients

    repo = clients.patients(settings)
    return {pid: (await repo.get_status(pid))[0] for pid in ids}
