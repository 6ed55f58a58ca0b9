"""Typed failures: clients raise these, tasks and flows decide on them (never on status codes)."""

from __future__ import annotations


class PatientDocsError(Exception):
    """Base of every failure this project defines."""


class InvalidPatientId(PatientDocsError, ValueError):
    """The ID is not 1 to 64 characters of A-Z a-z 0-9 _ -."""


class UnknownPatient(PatientDocsError, LookupError):
    """The ID is well formed but not in the patients table."""


class HostileArchive(PatientDocsError):
    """An archive entry or the archive as a whole breaks a safety rule; the message names it."""


class ServiceError(PatientDocsError):
    """A request to DocumentExchange or TaskTracker failed."""

    def __init__(self, service: str, message: str, *, retry_after: float | None = None):
        super().__init__(f"{service}: {message}")
        self.service = service
        self.retry_after = retry_after


class TransientError(ServiceError):
    """Outage, time-out, dropped connection: the same request may succeed later."""


class RateLimited(TransientError):
    """429: we sent more than the budget allows. Our limits exist so that this never happens."""


class PermanentError(ServiceError):
    """The request itself is wrong or refers to nothing; repeating it cannot help."""


class NotFound(PermanentError):
    """404: unknown job, archive or task."""


class SearchFailed(PermanentError):
    """The search job ended 'failed'; only a new search can find the documents."""


class UnsafeArchiveUrl(PermanentError):
    """The archive URL points somewhere other than the configured DocumentExchange."""


class OutageDeadline(PermanentError):
    """The service stayed unreachable past PATIENT_DOCS_OUTAGE_DEADLINE_SECONDS: the run gives up."""
