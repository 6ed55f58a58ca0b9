"""The shared activity CSV: one start and one finish row per simulated activity, safe across processes."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import astuple, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from patient_docs.settings import Settings

COLUMNS = ("timestamp", "event", "activity", "patient_id", "flow_run_id", "arguments", "outcome", "duration_s")
NAME_KEYS = frozenset({"first_name", "last_name", "given_name", "family_name", "full_name", "patient_name"})
SECRET_PARTS = ("password", "token", "secret", "authorization")
ARTIFACT_KEY = "activity-log"

_fallback_logger = logging.getLogger("patient_docs.activity")


@dataclass(frozen=True)
class ActivityRow:
    """One CSV row, every field exactly as stored."""

    timestamp: str
    event: str
    activity: str
    patient_id: str
    flow_run_id: str
    arguments: str
    outcome: str = ""
    duration_s: str = ""

    @property
    def args(self) -> dict[str, Any]:
        """The arguments column decoded."""
        return json.loads(self.arguments) if self.arguments else {}


@dataclass
class ActivityHandle:
    """What `activity()` yields; `.rows` holds the rows it wrote once the block has exited."""

    rows: list[ActivityRow] = field(default_factory=list)


def append_rows(path: Path, rows: Sequence[ActivityRow]) -> None:
    """Append rows atomically with respect to every other writer using this function."""
    if not rows:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        # Checked under the lock, so exactly one of several simultaneous creators writes the header.
        header = [COLUMNS] if os.fstat(fd).st_size == 0 else []
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(header + [astuple(row) for row in rows])
        data = memoryview(buffer.getvalue().encode())
        while data:  # one write in practice; the loop only guards against a short write
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)  # closing releases the lock


def read_rows(path: Path) -> list[ActivityRow]:
    """All rows of the log (empty if the file does not exist)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return []
    with os.fdopen(fd, "r", newline="", encoding="utf-8") as file:
        fcntl.flock(fd, fcntl.LOCK_SH)  # never read half of a row being appended
        text = file.read()
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is not None and tuple(header) != COLUMNS:
        raise ValueError(f"{path}: unexpected header {header!r}")
    return [ActivityRow(*record) for record in reader]


def _mask_value(key: str, value: object, show_names: bool) -> object:
    lowered = key.lower()
    if any(part in lowered for part in SECRET_PARTS):
        return "***"
    if isinstance(value, Mapping):
        return mask_arguments(value, show_names)
    if lowered in NAME_KEYS and not show_names and value is not None:
        return f"{str(value)[:1]}***"
    return value


def mask_arguments(args: Mapping[str, object], show_names: bool) -> dict[str, object]:
    """Names become `J***` unless `show_names`; secrets always become `***` (also in nested mappings)."""
    return {str(key): _mask_value(str(key), value, show_names) for key, value in args.items()}


_collected: dict[str, dict[ActivityRow, None]] = {}
_collected_lock = threading.Lock()


def add_collected_rows(flow_run_id: str, rows: Iterable[ActivityRow]) -> None:
    """Merge rows into this process's collector for a flow run (duplicates are ignored)."""
    if not flow_run_id:
        return
    with _collected_lock:
        _collected.setdefault(flow_run_id, {}).update(dict.fromkeys(rows))


def collected_rows(flow_run_id: str) -> list[ActivityRow]:
    """Rows collected so far in this process for a flow run."""
    with _collected_lock:
        return list(_collected.get(flow_run_id, {}))


def pop_collected_rows(flow_run_id: str) -> list[ActivityRow]:
    """Rows collected for a flow run, forgetting them."""
    with _collected_lock:
        return list(_collected.pop(flow_run_id, {}))


def _run_context() -> tuple[str, Any]:
    # Imported lazily so the audit and timeline commands start without loading Prefect.
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger
    from prefect.runtime import flow_run

    try:
        logger: Any = get_run_logger()
    except MissingContextError:
        logger = _fallback_logger
    return str(flow_run.id or ""), logger


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@contextmanager
def activity(
    name: str, *, patient_id: str, settings: Settings, flow_run_id: str | None = None, **arguments: object
) -> Iterator[ActivityHandle]:
    """Log a start row, run the block, log a finish row with outcome and duration; re-raise failures.

    `flow_run_id` is for code outside any Prefect run (a plain Dask task) working for a flow run.
    """
    run_id, logger = _run_context()
    run_id = flow_run_id or run_id
    encoded = json.dumps(mask_arguments(arguments, settings.log_patient_names), sort_keys=True, default=str)
    handle = ActivityHandle()

    def record(row: ActivityRow) -> None:
        append_rows(settings.activity_log, [row])
        handle.rows.append(row)
        add_collected_rows(run_id, [row])

    record(ActivityRow(_now(), "start", name, patient_id, run_id, encoded))
    logger.info("start %s patient=%s %s", name, patient_id, encoded)
    began = time.perf_counter()
    outcome = "ok"
    try:
        yield handle
    except BaseException as error:
        outcome = type(error).__name__
        raise
    finally:
        duration = time.perf_counter() - began
        record(ActivityRow(_now(), "finish", name, patient_id, run_id, encoded, outcome, f"{duration:.6f}"))
        logger.info("finish %s patient=%s outcome=%s in %.3fs", name, patient_id, outcome, duration)


async def publish_activity_table(flow_run_id: str, rows: Sequence[ActivityRow]) -> None:
    """Publish rows as the `activity-log` table artifact of the current run."""
    from prefect.artifacts import acreate_table_artifact

    await acreate_table_artifact(
        table=[dict(zip(COLUMNS, astuple(row))) for row in rows],
        key=ARTIFACT_KEY,
        description=f"Activity log of flow run {flow_run_id}: {len(rows)} rows (names masked unless enabled).",
    )
