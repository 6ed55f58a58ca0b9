"""Hostile archives end the run Failed, naming the rule, and leave no file anywhere."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from fault_helpers import DOWNLOAD, assert_completed, entries_for, no_limit_violations, requests, run_flow
from patient_docs import clients
from patient_docs.clients.docexchange import DocExchangeClient
from patient_docs.errors import UnsafeArchiveUrl

RULES = {
    "dotdot": "'..' in path",
    "absolute": "absolute path",
    "symlink": "symbolic link",
    "drive": "drive letter in path",
    "bomb": "file larger than 65536 bytes",
    "too_many": "more than 3000 files",
}


EVIL_NAMES = {"evil.txt", "evil", "C:\\evil.txt", "link-to-passwd", "bomb.txt"}


def evil_files(root: Path) -> list[Path]:
    """Hostile entries written anywhere under the test root (storage, database, logs)."""
    return [p for p in root.rglob("*") if p.name in EVIL_NAMES]


def evil_nearby() -> list[Path]:
    """Hostile entries next to the working directory, its parents or the temp folder."""
    import tempfile

    places = [Path.cwd(), *Path.cwd().parents, Path(tempfile.gettempdir())]
    return [place / name for place in places for name in EVIL_NAMES if (place / name).exists()]


@pytest.mark.usefixtures("clean_faults")
@pytest.mark.parametrize("kind", list(RULES))
async def test_hostile_archive_fails_the_run_and_writes_nothing(
    new_patient, settings, dx, tt, tmp_root, monkeypatch, kind
):
    """docs/outages.md: hostile archive -> Failed with the rule's name, no partial files, no retry."""
    monkeypatch.setattr(settings, "max_file_bytes", 64 * 1024)  # the bomb inflates to 1 MiB
    names = await new_patient(files=3, hostile=kind, bomb_bytes=2**20)
    downloads = requests(dx, DOWNLOAD)
    state = await run_flow(names.patient_id)

    assert state.is_failed()
    assert RULES[kind] in state.message, state.message
    assert requests(dx, DOWNLOAD) - downloads == 1  # a permanent failure is not retried
    store = clients.storage(settings)
    folder = Path(store._path(names.patient_id))
    assert not folder.exists() or not [p for p in folder.rglob("*") if p.is_file()]
    assert evil_files(tmp_root) == [] and evil_nearby() == []
    assert not Path("/etc/evil").exists()
    assert entries_for(tt, names.patient_id) == []  # step 5 never ran
    status, _ = await clients.patients(settings).get_status(names.patient_id)
    assert status is None
    no_limit_violations(dx, tt)

    # The next patient is unaffected.
    monkeypatch.undo()
    other = await new_patient(files=2)
    await assert_completed(await run_flow(other.patient_id), other, 2, settings, dx, tt)


BASE = "http://127.0.0.1:8101"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8102/v1/archives/abc",  # other port
        "http://evil.example:8101/v1/archives/abc",  # other host
        "https://127.0.0.1:8101/v1/archives/abc",  # other scheme
        "http://127.0.0.1:8101@evil.example/v1/archives/abc",  # userinfo trick: the host is evil.example
        "http://127.0.0.1:8101/v1/searches/abc",  # not an archive path
        "http://localhost:8101/v1/archives/abc",  # same machine, other name: still refused
    ],
)
async def test_foreign_archive_url_is_refused_without_a_request(tmp_path, url):
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(200, content=b"zip"))
    async with httpx.AsyncClient(transport=transport) as http:
        client = DocExchangeClient(http, BASE)
        with pytest.raises(UnsafeArchiveUrl):
            client.check_archive_url(url)
        with pytest.raises(UnsafeArchiveUrl):
            await client.download(url, tmp_path / "a.zip")
    assert sent == []
    assert not (tmp_path / "a.zip").exists()


async def test_archive_redirect_is_not_followed(tmp_path):
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(302, headers={"Location": "http://evil.example/x.zip"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = DocExchangeClient(http, BASE)
        with pytest.raises(UnsafeArchiveUrl, match="redirect"):
            await client.download(f"{BASE}/v1/archives/abc", tmp_path / "a.zip")
    assert [str(r.url) for r in sent] == [f"{BASE}/v1/archives/abc"]


async def test_same_service_archive_url_is_downloaded(tmp_path):
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(200, content=b"zip"))
    async with httpx.AsyncClient(transport=transport) as http:
        size = await DocExchangeClient(http, BASE).download(f"{BASE}/v1/archives/abc", tmp_path / "a.zip")
    assert size == 3 and len(sent) == 1
