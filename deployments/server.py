"""Start a local Prefect server for the demo and the CLI when none is configured."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

# Leases kept on disk survive a server restart; in memory (Prefect's default) a restart
# would leave every held slot taken forever.
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"


# API URL -> database URL of each server this process started: the API masks its connection URL,
# so this is how a backfill knows that the server it talks to is on SQLite (and must be spared).
STARTED: dict[str, str] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(home: Path, database_url: str | None = None) -> dict[str, str]:
    """The environment our Prefect servers run with (also what operators should set)."""
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": LEASE_STORAGE,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    return env


@contextmanager
def prefect_server(home: Path, *, port: int = 0, database_url: str | None = None, timeout: float = 90) -> Iterator[str]:
    """Run `prefect server start` until the block ends; yield its API URL."""
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env = os.environ | server_env(home, database_url)
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}/api"
    STARTED[api] = env.get("PREFECT_SERVER_DATABASE_CONNECTION_URL") or "sqlite (Prefect's default)"
    try:
        wait_healthy(api, proc, timeout)
        yield api
    finally:
        STARTED.pop(api, None)
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def wait_healthy(api: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Prefect server exited with {proc.returncode}; see its server.log")
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)  # readiness poll of a child process, not synchronisation between tests
    raise TimeoutError(f"Prefect server at {api} not healthy after {timeout:.0f} s")
