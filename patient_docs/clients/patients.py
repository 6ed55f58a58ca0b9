"""The patient database: names, documents status and per-patient run checkpoints."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Boolean, Column, DateTime, Dialect, MetaData, Table, Text, TypeDecorator, event, false
from sqlalchemy import select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from patient_docs.errors import UnknownPatient
from patient_docs.models import DocumentsStatus, PatientNames, validate_patient_id

BUSY_TIMEOUT_SECONDS = 60.0
_SCHEMA_LOCK = 0x70D0C5  # arbitrary advisory-lock key so concurrent create_schema calls take turns on PostgreSQL


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp, also on SQLite (which stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        value = self.process_result_value(value, dialect)
        return value.replace(tzinfo=None) if value and dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


metadata = MetaData()
patients = Table(
    "patients", metadata,
    Column("patient_id", Text, primary_key=True),
    Column("first_name", Text, nullable=False),
    Column("last_name", Text, nullable=False),
    Column("documents_status", Text, nullable=True),
    Column("status_updated_at", UtcDateTime, nullable=True),
)
patient_runs = Table(
    "patient_runs", metadata,
    Column("patient_id", Text, primary_key=True),
    Column("run_id", Text, nullable=False),
    Column("job_id", Text, nullable=True),
    Column("archive_stored", Boolean, nullable=False, default=False, server_default=false()),
    Column("task_id", Text, nullable=True),
    Column("finished", Boolean, nullable=False, default=False, server_default=false()),
    Column("updated_at", UtcDateTime, nullable=True),
)
RUN_FIELDS = frozenset({"run_id", "job_id", "archive_stored", "task_id", "finished"})
_UPSERT = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


class RunState(BaseModel):
    """One patient's run checkpoint: what a resumed run may reuse."""

    patient_id: str
    run_id: str
    job_id: str | None = None
    archive_stored: bool = False
    task_id: str | None = None
    finished: bool = False
    updated_at: datetime | None = None


def make_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite files get WAL, a busy timeout and write-locking transactions."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True)
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        # WAL persists in the file; switching before any transaction avoids deadlocking an open writer.
        with closing(sqlite3.connect(database, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)) as conn:
            conn.execute("PRAGMA journal_mode = WAL")
    engine = create_async_engine(url, connect_args={"timeout": BUSY_TIMEOUT_SECONDS})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver level so the "begin" hook below decides how transactions start.
        dbapi_connection.isolation_level = None

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A deferred read-then-write transaction fails at once ("database is locked") if another
        # process wrote meanwhile; IMMEDIATE takes the write lock up front and honours the busy timeout.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _upsert(conn: AsyncConnection, table: Table, columns: Iterable[str], where: Any = None) -> Any:
    """INSERT, or on a primary-key conflict UPDATE `columns` to the inserted values (if `where`)."""
    if conn.dialect.name not in _UPSERT:
        raise NotImplementedError(f"unsupported database dialect {conn.dialect.name!r}")
    stmt = _UPSERT[conn.dialect.name](table)
    set_ = {name: stmt.excluded[name] for name in columns}
    return stmt.on_conflict_do_update(index_elements=list(table.primary_key), set_=set_, where=where)


class PatientsRepo:
    """Reads and writes the `patients` and `patient_runs` tables."""

    def __init__(self, engine: AsyncEngine):
        self.engine = engine

    async def create_schema(self) -> None:
        """Create the tables that are missing; existing tables and rows are left alone."""
        async with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            await conn.run_sync(metadata.create_all, checkfirst=True)

    async def _patient(self, patient_id: str, *columns: Any) -> Row[Any]:
        validate_patient_id(patient_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(*columns).where(patients.c.patient_id == patient_id))).first()
        if row is None:
            raise UnknownPatient(f"patient ID {patient_id!r} is not in the patients table")
        return row

    async def get_names(self, patient_id: str) -> PatientNames:
        """The patient's names; UnknownPatient if the ID is not in the table."""
        row = await self._patient(patient_id, patients.c.first_name, patients.c.last_name)
        return PatientNames(patient_id=patient_id, first_name=row.first_name, last_name=row.last_name)

    async def set_status(self, patient_id: str, status: DocumentsStatus) -> None:
        """Write documents_status and stamp status_updated_at with the current UTC time."""
        validate_patient_id(patient_id)
        query = update(patients).where(patients.c.patient_id == patient_id)
        query = query.values(documents_status=DocumentsStatus(status).value, status_updated_at=datetime.now(UTC))
        async with self.engine.begin() as conn:
            if (await conn.execute(query)).rowcount == 0:
                raise UnknownPatient(f"patient ID {patient_id!r} is not in the patients table")

    async def get_status(self, patient_id: str) -> tuple[str | None, datetime | None]:
        """(documents_status, status_updated_at); UnknownPatient if the ID is not in the table."""
        row = await self._patient(patient_id, patients.c.documents_status, patients.c.status_updated_at)
        return row.documents_status, row.status_updated_at

    async def upsert_patients(self, rows: Iterable[PatientNames]) -> int:
        """Insert patients or update their names (status untouched); returns the number of rows given."""
        values = [{"patient_id": validate_patient_id(r.patient_id), "first_name": r.first_name,
                   "last_name": r.last_name} for r in rows]
        if values:
            async with self.engine.begin() as conn:
                await conn.execute(_upsert(conn, patients, ["first_name", "last_name"]), values)
        return len(values)

    async def ids_without_status(self, limit: int | None = None) -> list[str]:
        """IDs whose documents_status is null, sorted."""
        query = select(patients.c.patient_id).where(patients.c.documents_status.is_(None))
        query = query.order_by(patients.c.patient_id).limit(limit)
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).scalars())

    async def get_run(self, patient_id: str) -> RunState | None:
        """The patient's last run checkpoint, if any."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(patient_runs).where(patient_runs.c.patient_id == patient_id))).first()
        return None if row is None else RunState(**row._mapping)

    async def start_run(self, patient_id: str, run_id: str) -> RunState:
        """Resume the unfinished run (or the finished run with this run_id); else start afresh."""
        validate_patient_id(patient_id)
        fresh = {"run_id": run_id, "job_id": None, "archive_stored": False, "task_id": None,
                 "finished": False, "updated_at": datetime.now(UTC)}
        restart = patient_runs.c.finished.is_(True) & (patient_runs.c.run_id != run_id)
        async with self.engine.begin() as conn:
            # One atomic statement, so concurrent starters for one patient agree on a single run.
            await conn.execute(_upsert(conn, patient_runs, fresh, where=restart), {"patient_id": patient_id, **fresh})
            row = (await conn.execute(select(patient_runs).where(patient_runs.c.patient_id == patient_id))).one()
        return RunState(**row._mapping)

    async def save_run(self, patient_id: str, **fields: Any) -> None:
        """Update checkpoint fields (run_id, job_id, archive_stored, task_id, finished)."""
        if unknown := set(fields) - RUN_FIELDS:
            raise TypeError(f"unknown run fields: {sorted(unknown)}")
        query = update(patient_runs).where(patient_runs.c.patient_id == patient_id)
        query = query.values(**fields, updated_at=datetime.now(UTC))
        async with self.engine.begin() as conn:
            if (await conn.execute(query)).rowcount == 0:
                raise LookupError(f"no run recorded for patient ID {patient_id!r}; call start_run first")

    async def finish_run(self, patient_id: str) -> None:
        """Mark the patient's run finished, so the next start_run starts afresh."""
        await self.save_run(patient_id, finished=True)
