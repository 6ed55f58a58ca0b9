"""Which failures a task retries: transient ones and unknown ones, never permanent ones."""

import pytest
from prefect.states import Failed

from patient_docs.errors import HostileArchive, InvalidPatientId, NotFound, RateLimited, SearchFailed, TransientError
from tasks.policy import transient_only


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (TransientError("X", "503"), True),
        (RateLimited("X", "429", retry_after=3), True),
        (RuntimeError("bug"), True),
        (NotFound("X", "404"), False),
        (SearchFailed("X", "failed"), False),
        (HostileArchive("../evil"), False),
        (InvalidPatientId("bad"), False),
    ],
)
def test_retry_condition(exc, retry):
    assert transient_only(None, None, Failed(data=exc)) is retry
