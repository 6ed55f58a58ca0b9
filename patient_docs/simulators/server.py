"""Run the simulators with uvicorn: in a background thread for tests, or in the foreground."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from types import TracebackType
from typing import NamedTuple

import uvicorn
from fastapi import FastAPI

from patient_docs.settings import Settings
from patient_docs.simulators.docexchange import create_docexchange_app
from patient_docs.simulators.tasktracker import create_tasktracker_app


class _Server(uvicorn.Server):
    """A uvicorn server that signals once it is listening."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


class SimulatorServer:
    """Serve an app on host:port (0 = a free port) in a background thread while the context is open."""

    def __init__(self, app: FastAPI, port: int = 0, host: str = "127.0.0.1", *, start_timeout: float = 10.0) -> None:
        self.app, self.host, self.port, self.start_timeout = app, host, port, start_timeout
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL without a trailing slash."""
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> "SimulatorServer":
        # Binding here (not in uvicorn) tells us the port before the thread starts.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            http="h11",
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = _Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"simulator:{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self._server.ready.wait(0.01):
            if not self._thread.is_alive():
                sock.close()
                raise RuntimeError(f"simulator on {self.url} failed to start")
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise TimeoutError(f"simulator on {self.url} did not start")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None


class RunningSimulators(NamedTuple):
    docexchange_url: str
    tasktracker_url: str
    docexchange_app: FastAPI
    tasktracker_app: FastAPI


@contextmanager
def run_simulators(
    settings: Settings, docexchange_port: int = 0, tasktracker_port: int = 0
) -> Iterator[RunningSimulators]:
    """Both simulators on loopback (free ports by default) while the context is open."""
    docexchange, tasktracker = create_docexchange_app(settings), create_tasktracker_app(settings)
    with ExitStack() as stack:
        de = stack.enter_context(SimulatorServer(docexchange, docexchange_port))
        tt = stack.enter_context(SimulatorServer(tasktracker, tasktracker_port))
        yield RunningSimulators(de.url, tt.url, docexchange, tasktracker)


def serve_simulators(settings: Settings, docexchange_port: int = 8101, tasktracker_port: int = 8102) -> None:
    """Run both simulators in the foreground until Ctrl-C."""
    with run_simulators(settings, docexchange_port, tasktracker_port) as sims:
        print(f"DocumentExchange simulator: {sims.docexchange_url}", flush=True)
        print(f"TaskTracker simulator:      {sims.tasktracker_url}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop cleanly on kill, too
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
