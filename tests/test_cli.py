"""The console command's contract: one line per patient, exit 0 / 1 / 2."""

from __future__ import annotations

import asyncio
import uuid

from typer.testing import CliRunner

from patient_docs import clients
from patient_docs.cli import app
from patient_docs.models import PatientNames


def seed(settings, dx, files: int) -> str:
    tag = uuid.uuid4().hex[:10]
    names = PatientNames(patient_id=f"cli-{tag}", first_name=f"F{tag}", last_name=f"L{tag}")
    dx.set_patient(names.first_name, names.last_name, files=files)
    async def insert():
        await clients.patients(settings).upsert_patients([names])

    asyncio.run(insert())
    return names.patient_id


def test_run_prints_one_line_per_patient_and_exits_0(settings, dx):
    ids = [seed(settings, dx, 2), seed(settings, dx, 0)]
    result = CliRunner().invoke(app, ["run", *ids])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("cli-")]
    assert sorted(line.split("\t")[:2][0] for line in lines) == sorted(ids)
    assert all("\tCompleted" in line for line in lines)
    assert "documents=2" in next(line for line in lines if line.startswith(ids[0]))


def test_run_exits_1_when_any_patient_fails(settings, dx):
    good = seed(settings, dx, 0)
    result = CliRunner().invoke(app, ["run", good, "no such patient"])
    assert result.exit_code == 1
    assert "invalid patient ID" in result.output and f"{good}\tCompleted" in result.output


def test_bad_usage_exits_2():
    assert CliRunner().invoke(app, ["run"]).exit_code == 2
    assert CliRunner().invoke(app, ["no-such-command"]).exit_code == 2


def test_limits_apply_is_idempotent(stack):
    first = CliRunner().invoke(app, ["limits", "apply"])
    again = CliRunner().invoke(app, ["limits", "apply"])
    assert first.exit_code == again.exit_code == 0
    for name in ("docexchange-search", "docexchange-poll", "tasktracker"):
        assert name in again.output
