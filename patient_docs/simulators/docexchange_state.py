"""DocumentExchange simulator state: patients' behaviour, search jobs and their archives."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from patient_docs.settings import Settings
from patient_docs.simulators.archives import DEFAULT_BOMB_BYTES, HostileKind, build_archive
from patient_docs.simulators.common import SimCore


class SearchRequest(BaseModel):
    first_name: str = Field(min_length=1, max_length=200)
    last_name: str = Field(min_length=1, max_length=200)


class SearchJob(BaseModel):
    job_id: str
    status: Literal["pending", "running", "completed", "failed"]
    archive_url: str | None = None
    error: str | None = None


class PatientProfile(BaseModel):
    """How the simulator answers searches for one (first_name, last_name)."""

    first_name: str
    last_name: str
    files: int | None = Field(None, ge=0)
    hostile: HostileKind | None = None
    fail_job: bool = False
    fail_jobs: int = Field(0, ge=0, description="fail this many next searches, then succeed")
    job_seconds: float | None = Field(None, ge=0)
    bomb_bytes: int | None = Field(None, gt=0)


@dataclass
class Job:
    job_id: str
    created: float
    seconds: float
    failed: bool
    archive_id: str


@dataclass(frozen=True)
class ArchiveSpec:
    files: int
    seed: str
    hostile: HostileKind | None
    bomb_bytes: int


def _classify(method: str, path: str) -> tuple[str | None, str]:
    if path == "/v1/searches" and method == "POST":
        return "transfer", "POST /v1/searches"
    if path.startswith("/v1/searches/") and method == "GET":
        return "poll", "GET /v1/searches/{job_id}"
    if path.startswith("/v1/archives/") and method == "GET":
        return "transfer", "GET /v1/archives/{archive_id}"
    return None, f"{method} {path}"


class DocExchangeSim(SimCore):
    """State of the DocumentExchange simulator (app.state.sim)."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] | None = None, seed: int | None = None):
        budgets = {"transfer": settings.docexchange_transfer_limit, "poll": settings.docexchange_poll_limit}
        super().__init__(settings, budgets, _classify, clock=clock, seed=seed)
        self.patients: dict[tuple[str, str], PatientProfile] = {}
        self.jobs: dict[str, Job] = {}
        self.archives: dict[str, ArchiveSpec] = {}
        self._archive_bytes: dict[str, bytes] = {}

    def reset(self) -> None:
        """Forget patients, jobs, archives and counts."""
        super().reset()
        self.patients, self.jobs, self.archives, self._archive_bytes = {}, {}, {}, {}

    def set_patient(
        self,
        first_name: str,
        last_name: str,
        *,
        files: int | None = None,
        hostile: HostileKind | None = None,
        fail_job: bool = False,
        fail_jobs: int = 0,
        job_seconds: float | None = None,
        bomb_bytes: int | None = None,
    ) -> PatientProfile:
        """Choose how searches for this patient behave (None keeps the default)."""
        profile = PatientProfile(
            first_name=first_name,
            last_name=last_name,
            files=files,
            hostile=hostile,
            fail_job=fail_job,
            fail_jobs=fail_jobs,
            job_seconds=job_seconds,
            bomb_bytes=bomb_bytes,
        )
        self.patients[(first_name, last_name)] = profile
        return profile

    def default_files(self, first_name: str, last_name: str) -> int:
        """A stable file count from the names: 10% none, most 1-30, a few up to 200."""
        h = int.from_bytes(hashlib.sha256(f"{first_name}\0{last_name}".encode()).digest()[:8], "big")
        bucket, rest = h % 100, h // 100
        files = 0 if bucket < 10 else 1 + rest % 30 if bucket < 95 else 31 + rest % 170
        return min(files, self.settings.sim_max_files)

    def start_job(self, first_name: str, last_name: str) -> Job:
        """Create a search job and the archive it will point at."""
        profile = self.patients.get((first_name, last_name)) or PatientProfile(
            first_name=first_name, last_name=last_name
        )
        failed = profile.fail_job or profile.fail_jobs > 0
        if profile.fail_jobs > 0:
            profile.fail_jobs -= 1
        files = profile.files if profile.files is not None else self.default_files(first_name, last_name)
        seconds = profile.job_seconds if profile.job_seconds is not None else self.settings.sim_job_seconds
        job = Job(uuid.uuid4().hex, self.clock(), self.settings.scaled(seconds), failed, uuid.uuid4().hex)
        self.jobs[job.job_id] = job
        if not failed:
            seed = f"{first_name}\0{last_name}"
            self.archives[job.archive_id] = ArchiveSpec(
                files, seed, profile.hostile, profile.bomb_bytes or DEFAULT_BOMB_BYTES
            )
        return job

    def job_view(self, job: Job, base_url: str) -> SearchJob:
        """The job as a client sees it now."""
        elapsed = self.clock() - job.created
        if elapsed < job.seconds:
            status = "pending" if elapsed < job.seconds * 0.1 else "running"
            return SearchJob(job_id=job.job_id, status=status)
        if job.failed:
            return SearchJob(job_id=job.job_id, status="failed", error="an outside source failed during the search")
        url = f"{base_url.rstrip('/')}/v1/archives/{job.archive_id}"
        return SearchJob(job_id=job.job_id, status="completed", archive_url=url)

    async def archive(self, archive_id: str) -> bytes | None:
        """The zip bytes of a known archive, built once off the event loop."""
        spec = self.archives.get(archive_id)
        if spec is None:
            return None
        if archive_id not in self._archive_bytes:
            data = await asyncio.to_thread(
                build_archive, spec.files, spec.seed, spec.hostile, bomb_bytes=spec.bomb_bytes
            )
            self._archive_bytes[archive_id] = data
        return self._archive_bytes[archive_id]
