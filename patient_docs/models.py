"""Small typed values passed between clients, tasks and the flow."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, Field

from patient_docs.errors import InvalidPatientId

PATIENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def validate_patient_id(patient_id: object) -> str:
    """Return the ID if it is 1 to 64 characters of A-Z a-z 0-9 _ -, else raise InvalidPatientId."""
    if not isinstance(patient_id, str) or not PATIENT_ID.match(patient_id):
        raise InvalidPatientId(
            f"invalid patient ID {patient_id!r}: expected 1 to 64 characters of A-Z a-z 0-9 _ -"
        )
    return patient_id


class DocumentsStatus(StrEnum):
    FOUND = "DOCUMENTS_FOUND"
    NOT_FOUND = "DOCUMENTS_NOT_FOUND"


class PatientNames(BaseModel):
    patient_id: str
    first_name: str
    last_name: str


class SearchJob(BaseModel):
    job_id: str
    status: str  # pending | running | completed | failed
    archive_url: str | None = None
    error: str | None = None


class Report(BaseModel):
    title: str = ""
    documents: list[str] = Field(default_factory=list)
    body: str = ""


class Task(BaseModel):
    task_id: str
    patient_id: str
    first_name: str | None = None
    last_name: str | None = None
    status: str
    reports: list[Report] = Field(default_factory=list)
