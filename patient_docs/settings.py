"""The one settings object: every PATIENT_DOCS_* variable, with defaults for the embedded demo."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, NamedTuple

from pydantic import BeforeValidator, Field, PlainSerializer, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_BUDGET = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*s\s*$")


class Budget(NamedTuple):
    """At most `count` requests in any rolling `window` seconds."""

    count: int
    window: float

    def __str__(self) -> str:
        return f"{self.count}/{self.window:g}s"


def parse_budget(value: object) -> Budget:
    if isinstance(value, Budget):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return Budget(int(value[0]), float(value[1]))
    match = _BUDGET.match(str(value))
    if not match or int(match[1]) < 1 or float(match[2]) <= 0:
        raise ValueError(f"budget must look like COUNT/SECONDSs, e.g. 10/60s; got {value!r}")
    return Budget(int(match[1]), float(match[2]))


BudgetField = Annotated[Budget, NoDecode, BeforeValidator(parse_budget), PlainSerializer(str)]

HOME = Path(".patient-docs")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PATIENT_DOCS_", env_file=".env", extra="ignore")

    # Contract variables (../shared/contracts/README.md, "Configuration").
    database_url: str = Field(default_factory=lambda: f"sqlite+aiosqlite:///{(HOME / 'patients.db').resolve()}")
    storage_url: str = Field(default_factory=lambda: (HOME / "storage").resolve().as_uri())
    docexchange_url: str = "http://127.0.0.1:8101"
    tasktracker_url: str = "http://127.0.0.1:8102"
    docexchange_transfer_limit: BudgetField = Budget(10, 60.0)
    docexchange_poll_limit: BudgetField = Budget(10, 1.0)
    tasktracker_limit: BudgetField = Budget(10, 1.0)
    activity_log: Path = Field(default_factory=lambda: (HOME / "activity.csv").resolve())
    dask_address: str | None = None

    # Simulated work: seconds each simulated activity sleeps, multiplied by time_scale.
    time_scale: float = Field(1.0, gt=0)
    conversion_seconds: float = 2.0
    report_seconds: float = 0.5
    database_seconds: float = 0.02

    # Requests and retries.
    request_timeout: float = Field(30.0, gt=0)
    download_timeout: float = Field(600.0, gt=0)
    poll_initial_seconds: float = 1.0
    poll_max_seconds: float = 60.0
    outage_deadline_seconds: float = 4 * 3600.0  # how long a patient waits through an outage
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 600.0
    # A low-priority waiter queued this many windows is served like a high-priority one.
    priority_aging_windows: float = 10.0

    # Archive safety.
    max_archive_files: int = 3000
    max_file_bytes: int = 200 * 2**20
    max_archive_bytes: int = 2 * 2**30

    # Conversion worker: what one Dask worker declares, what one conversion asks for.
    worker_threads: int = 8
    worker_memory: float = 12e9
    conversion_memory: float = 1e9
    # A Dask task carries at least this much (real) conversion time, files one after another:
    # Dask's own cost per task (a few ms on a loaded worker) then stays under 1 % of the work. At
    # real durations (2 s a file) every file is its own task; compressed, a task takes several.
    conversion_batch_seconds: float = Field(0.5, ge=0)

    # Names are health data: masked in logs and artifacts unless a simulation asks otherwise.
    log_patient_names: bool = False

    # Simulators (used by `patient-docs simulate` and the demo, not by the flow).
    sim_job_seconds: float = 20.0
    sim_download_seconds: float = 2.0
    sim_latency_min: float = 0.005
    sim_latency_max: float = 0.05
    sim_max_files: int = 3000

    @model_validator(mode="after")
    def _strip_urls(self) -> "Settings":
        self.docexchange_url = self.docexchange_url.rstrip("/")
        self.tasktracker_url = self.tasktracker_url.rstrip("/")
        return self

    def scaled(self, seconds: float) -> float:
        """A simulated duration in real seconds."""
        return seconds * self.time_scale


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build their own `Settings(...)` instead."""
    return Settings()
