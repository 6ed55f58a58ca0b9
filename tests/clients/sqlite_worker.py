"""Run by test_patients in several processes at once: one burst of writes to a shared SQLite file."""

from __future__ import annotations

import asyncio
import sys

from patient_docs.clients.patients import PatientsRepo, make_engine
from patient_docs.models import DocumentsStatus, PatientNames


async def main(url: str, ids: list[str]) -> None:
    engine = make_engine(url)
    repo = PatientsRepo(engine)
    await repo.create_schema()
    await repo.upsert_patients(PatientNames(patient_id=i, first_name="a", last_name="b") for i in ids)

    async def one(pid: str) -> None:
        await repo.start_run(pid, "r")
        await repo.get_names(pid)
        await repo.save_run(pid, job_id="j", archive_stored=True)
        await repo.set_status(pid, DocumentsStatus.FOUND)
        await repo.finish_run(pid)

    await asyncio.gather(*(one(p) for p in ids))
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
