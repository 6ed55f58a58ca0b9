"""The patient database on SQLite and PostgreSQL: names, status, run checkpoints, concurrency."""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import PIPE

import pytest
from sqlalchemy import text

from patient_docs.clients.patients import PatientsRepo, RunState, make_engine
from patient_docs.errors import InvalidPatientId, UnknownPatient
from patient_docs.models import DocumentsStatus, PatientNames


def new_id(prefix: str = "p") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


async def seed(repo: PatientsRepo, n: int = 1) -> list[str]:
    ids = [new_id() for _ in range(n)]
    await repo.upsert_patients(PatientNames(patient_id=i, first_name=f"F{i}", last_name=f"L{i}") for i in ids)
    return ids


async def test_create_schema_is_idempotent_and_keeps_rows(repo: PatientsRepo) -> None:
    [pid] = await seed(repo)
    await repo.create_schema()
    assert (await repo.get_names(pid)).first_name == f"F{pid}"


async def test_create_schema_concurrently(db_url: str) -> None:
    engines = [make_engine(db_url) for _ in range(4)]
    try:
        await asyncio.gather(*(PatientsRepo(e).create_schema() for e in engines))
    finally:
        for e in engines:
            await e.dispose()


async def test_schema_matches_contract(repo: PatientsRepo) -> None:
    async with repo.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            rows = (await conn.execute(text("PRAGMA table_info(patients)"))).all()
            cols = {r.name: (r.type.upper(), bool(r.notnull), bool(r.pk)) for r in rows}
            assert cols["patient_id"][2] and cols["first_name"][1] and cols["last_name"][1]
            assert not cols["documents_status"][1] and not cols["status_updated_at"][1]
        else:
            rows = (await conn.execute(text(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                "WHERE table_name = 'patients'"
            ))).all()
            cols = {r.column_name: (r.data_type, r.is_nullable) for r in rows}
            text_col, tz_col = ("text", "NO"), ("timestamp with time zone", "YES")
            assert cols == {"patient_id": text_col, "first_name": text_col, "last_name": text_col,
                            "documents_status": ("text", "YES"), "status_updated_at": tz_col}


async def test_get_names_and_unknown(repo: PatientsRepo) -> None:
    [pid] = await seed(repo)
    assert await repo.get_names(pid) == PatientNames(patient_id=pid, first_name=f"F{pid}", last_name=f"L{pid}")
    missing = new_id("missing")
    with pytest.raises(UnknownPatient, match=missing):
        await repo.get_names(missing)
    with pytest.raises(InvalidPatientId):
        await repo.get_names("../etc")


async def test_upsert_updates_names_but_not_status(repo: PatientsRepo) -> None:
    [pid] = await seed(repo)
    await repo.set_status(pid, DocumentsStatus.FOUND)
    count = await repo.upsert_patients([PatientNames(patient_id=pid, first_name="Ann", last_name="Lee")])
    assert count == 1
    assert (await repo.get_names(pid)).last_name == "Lee"
    assert (await repo.get_status(pid))[0] == "DOCUMENTS_FOUND"


async def test_status_roundtrip(repo: PatientsRepo) -> None:
    [pid] = await seed(repo)
    assert await repo.get_status(pid) == (None, None)
    before = datetime.now(UTC)
    await repo.set_status(pid, DocumentsStatus.NOT_FOUND)
    await repo.set_status(pid, DocumentsStatus.NOT_FOUND)
    status, at = await repo.get_status(pid)
    assert status == "DOCUMENTS_NOT_FOUND"
    assert at is not None and at.tzinfo is not None
    assert before - timedelta(seconds=1) <= at <= datetime.now(UTC) + timedelta(seconds=1)
    await repo.set_status(pid, DocumentsStatus.FOUND)
    assert (await repo.get_status(pid))[0] == "DOCUMENTS_FOUND"
    with pytest.raises(UnknownPatient):
        await repo.set_status(new_id("missing"), DocumentsStatus.FOUND)


async def test_ids_without_status(repo: PatientsRepo) -> None:
    ids = await seed(repo, 5)
    await repo.set_status(ids[0], DocumentsStatus.FOUND)
    pending = await repo.ids_without_status()
    assert set(ids[1:]) <= set(pending) and ids[0] not in pending
    assert pending == sorted(pending)
    assert len(await repo.ids_without_status(limit=2)) == 2


async def test_run_lifecycle(repo: PatientsRepo) -> None:
    [pid] = await seed(repo)
    assert await repo.get_run(pid) is None
    first = await repo.start_run(pid, "run-1")
    assert first.run_id == "run-1" and not first.finished and first.job_id is None
    await repo.save_run(pid, job_id="job-9", archive_stored=True)
    # A crash, then another start: the unfinished run is resumed unchanged.
    resumed = await repo.start_run(pid, "run-2")
    assert (resumed.run_id, resumed.job_id, resumed.archive_stored) == ("run-1", "job-9", True)
    await repo.save_run(pid, task_id="task-3")
    await repo.finish_run(pid)
    done = await repo.get_run(pid)
    assert isinstance(done, RunState) and done.finished and done.task_id == "task-3"
    # The same run started again after it finished is still that run, not a new one.
    assert (await repo.start_run(pid, "run-1")).finished
    fresh = await repo.start_run(pid, "run-3")
    assert fresh.model_dump(exclude={"updated_at"}) == RunState(patient_id=pid, run_id="run-3").model_dump(
        exclude={"updated_at"}
    )


async def test_save_run_errors(repo: PatientsRepo) -> None:
    [pid] = await seed(repo)
    with pytest.raises(LookupError):
        await repo.save_run(pid, job_id="x")
    await repo.start_run(pid, "r")
    with pytest.raises(TypeError):
        await repo.save_run(pid, patient_id="other")


async def test_concurrent_start_run_agrees_on_one_run(repo: PatientsRepo) -> None:
    [pid] = await seed(repo)
    states = await asyncio.gather(*(repo.start_run(pid, f"run-{i}") for i in range(10)))
    assert len({s.run_id for s in states}) == 1


async def test_many_concurrent_writers_in_process(repo: PatientsRepo) -> None:
    ids = await seed(repo, 30)

    async def one(pid: str) -> None:
        await repo.start_run(pid, "r")
        await repo.save_run(pid, job_id="j")
        await repo.set_status(pid, DocumentsStatus.FOUND)
        await repo.finish_run(pid)

    await asyncio.gather(*(one(p) for p in ids))
    states = [await repo.get_run(p) for p in ids]
    assert all(s is not None and s.finished for s in states)


WORKER = Path(__file__).with_name("sqlite_worker.py")


async def test_sqlite_many_processes_do_not_lock(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db' / 'shared.db'}"
    groups = [[new_id(f"w{w}") for _ in range(25)] for w in range(6)]
    spawn = (asyncio.create_subprocess_exec(sys.executable, str(WORKER), url, *ids, stderr=PIPE) for ids in groups)
    procs = [await p for p in spawn]
    results = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), timeout=120)
    assert all(p.returncode == 0 for p in procs), [err.decode()[-2000:] for _, err in results]
    engine = make_engine(url)
    repo = PatientsRepo(engine)
    for pid in (i for g in groups for i in g):
        assert (await repo.get_status(pid))[0] == "DOCUMENTS_FOUND"
        state = await repo.get_run(pid)
        assert state is not None and state.finished
    async with engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
    await engine.dispose()


async def test_existing_table_is_used_as_is(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'existing.db'}"
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text(
            "CREATE TABLE patients (patient_id TEXT PRIMARY KEY, first_name TEXT NOT NULL, last_name TEXT NOT NULL, "
            "documents_status TEXT, status_updated_at TIMESTAMP WITH TIME ZONE, extra TEXT)"
        ))
        await conn.execute(text("INSERT INTO patients VALUES ('P1', 'Ada', 'Byron', NULL, NULL, 'keep')"))
    repo = PatientsRepo(engine)
    await repo.create_schema()
    assert (await repo.get_names("P1")).last_name == "Byron"
    await repo.set_status("P1", DocumentsStatus.FOUND)
    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT extra, documents_status FROM patients"))).one()
    assert tuple(row) == ("keep", "DOCUMENTS_FOUND")
    await engine.dispose()
