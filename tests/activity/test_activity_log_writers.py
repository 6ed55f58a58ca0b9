"""The shared CSV under concurrent writers, masking, the activity() context manager and the collector."""

from __future__ import annotations

import json
import logging
import multiprocessing
import random
import re
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from patient_docs.activity_log import (
    COLUMNS,
    ActivityRow,
    activity,
    add_collected_rows,
    append_rows,
    collected_rows,
    mask_arguments,
    pop_collected_rows,
    read_rows,
)
from patient_docs.settings import Settings

WRITERS = 4
ROWS_PER_WRITER = 500


def _row(writer: int, seq: int, length: int) -> ActivityRow:
    blob = chr(ord("a") + writer) * length
    arguments = json.dumps({"blob": blob, "length": length, "seq": seq, "writer": writer}, sort_keys=True)
    return ActivityRow(datetime.now(timezone.utc).isoformat(), "start", "stress", f"p{writer}", "", arguments)


def _write_many(path: str, writer: int, barrier: threading.Barrier | None) -> None:
    """Append ROWS_PER_WRITER rows, one or two per call, some longer than 4 KB."""
    rng = random.Random(writer)
    if barrier is not None:
        barrier.wait()  # all writers race to create the file and its header
    seq = 0
    while seq < ROWS_PER_WRITER:
        end = min(seq + rng.randint(1, 2), ROWS_PER_WRITER)
        batch = [_row(writer, s, rng.choice([20, 300, 3000, 5000, 9000])) for s in range(seq, end)]
        append_rows(Path(path), batch)
        seq += len(batch)


def _create_many(directory: str, writer: int, barrier: threading.Barrier, files: int) -> None:
    """Race the other writers to create each of `files` fresh logs."""
    for index in range(files):
        barrier.wait()
        append_rows(Path(directory) / f"{index}.csv", [_row(writer, 0, 10)])


def _check_log(path: Path, writers: int) -> None:
    text = path.read_text()
    assert text.count("timestamp,event,") == 1 and text.startswith(",".join(COLUMNS) + "\n")
    rows = read_rows(path)
    assert len(rows) == writers * ROWS_PER_WRITER
    seen: dict[int, list[int]] = {w: [] for w in range(writers)}
    for row in rows:
        args = json.loads(row.arguments)
        assert args["blob"] == chr(ord("a") + args["writer"]) * args["length"]
        assert row.patient_id == f"p{args['writer']}"
        seen[args["writer"]].append(args["seq"])
    assert all(seqs == list(range(ROWS_PER_WRITER)) for seqs in seen.values())
    assert any(len(line.encode()) > 4096 for line in text.splitlines())


def test_concurrent_processes_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "activity.csv"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WRITERS)
    processes = [context.Process(target=_write_many, args=(str(path), w, barrier)) for w in range(WRITERS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0] * WRITERS
    _check_log(path, WRITERS)


def test_processes_creating_the_file_together_write_one_header(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WRITERS)
    processes = [
        context.Process(target=_create_many, args=(str(tmp_path), w, barrier, 100)) for w in range(WRITERS)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0] * WRITERS
    for index in range(100):
        text = (tmp_path / f"{index}.csv").read_text()
        assert text.count("timestamp,event,") == 1 and len(read_rows(tmp_path / f"{index}.csv")) == WRITERS


def test_concurrent_threads_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "activity.csv"
    barrier = threading.Barrier(WRITERS)
    threads = [threading.Thread(target=_write_many, args=(str(path), w, barrier)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _check_log(path, WRITERS)


def test_read_rows_of_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_rows(tmp_path / "absent.csv") == []


def test_awkward_values_round_trip(tmp_path: Path) -> None:
    stamp = "2025-01-01T00:00:00.000001+00:00"
    row = ActivityRow(stamp, "finish", 'con,"vert"', "p\n1", "r", '{"a": "x\\ny"}', "ok", "1.5")
    append_rows(tmp_path / "log.csv", [row, row])
    assert read_rows(tmp_path / "log.csv") == [row, row]


def test_mask_names_and_secrets() -> None:
    args = {"first_name": "Jane", "last_name": "Doe", "api_token": "abc", "Authorization": "Bearer x",
            "db_password": "pw", "client_secret": "s", "nested": {"family_name": "Roe", "token": "t"}, "count": 3}
    assert mask_arguments(args, show_names=False) == {
        "first_name": "J***", "last_name": "D***", "api_token": "***", "Authorization": "***", "db_password": "***",
        "client_secret": "***", "nested": {"family_name": "R***", "token": "***"}, "count": 3,
    }
    shown = mask_arguments(args, show_names=True)
    assert (shown["first_name"], shown["last_name"], shown["api_token"]) == ("Jane", "Doe", "***")
    assert args["first_name"] == "Jane"  # the caller's mapping is untouched


def test_activity_writes_start_and_finish(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="patient_docs.activity"):
        with activity("convert", patient_id="p1", settings=settings, zeta=1, first_name="Jane", alpha="x") as handle:
            assert len(read_rows(settings.activity_log)) == 1
    start, finish = rows = read_rows(settings.activity_log)
    assert handle.rows == rows
    assert (start.event, start.outcome, start.duration_s) == ("start", "", "")
    assert (finish.event, finish.outcome) == ("finish", "ok")
    assert float(finish.duration_s) >= 0
    assert start.arguments == finish.arguments == '{"alpha": "x", "first_name": "J***", "zeta": 1}'
    assert start.activity == "convert" and start.patient_id == "p1" and start.flow_run_id == ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", start.timestamp)
    assert [r.getMessage().split()[0] for r in caplog.records] == ["start", "finish"]
    assert "Jane" not in caplog.text


def test_activity_records_failure_and_reraises(settings: Settings) -> None:
    with pytest.raises(KeyError):
        with activity("download", patient_id="p2", settings=settings):
            raise KeyError("missing")
    start, finish = read_rows(settings.activity_log)
    assert (start.outcome, finish.outcome) == ("", "KeyError")
    assert finish.duration_s != ""


def test_activity_shows_names_when_asked(settings: Settings) -> None:
    with activity("report", patient_id="p3", settings=settings.model_copy(update={"log_patient_names": True}),
                  first_name="Jane"):
        pass
    assert all(json.loads(row.arguments) == {"first_name": "Jane"} for row in read_rows(settings.activity_log))


def test_collector_merges_without_duplicates() -> None:
    rows = [ActivityRow(f"2025-01-01T00:00:0{i}.000000+00:00", "start", "a", "p", "run-x", "{}") for i in range(3)]
    add_collected_rows("run-x", rows[:2])
    add_collected_rows("run-x", rows[1:])
    add_collected_rows("", rows)  # outside a run nothing is collected
    assert collected_rows("run-x") == rows
    assert pop_collected_rows("run-x") == rows
    assert collected_rows("run-x") == [] and collected_rows("") == []
