"""Document storage on file:// and memory://: layout, replacement, path safety, threads."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fsspec
import pytest

from patient_docs.clients.storage import DocumentStore, UnsafePath
from patient_docs.errors import InvalidPatientId


def new_id() -> str:
    return f"p-{uuid.uuid4().hex[:16]}"


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DocumentStore]:
    if request.param == "file":
        yield DocumentStore((tmp_path / "root").as_uri())
    else:
        root = f"memory://store-{uuid.uuid4().hex}"
        yield DocumentStore(root)
        memory = fsspec.filesystem("memory")
        if memory.exists(root):
            memory.rm(root, recursive=True)


def test_layout_on_disk(tmp_path: Path) -> None:
    store = DocumentStore((tmp_path / "root").as_uri())
    pid = new_id()
    store.put_document(pid, "a/b/c.txt", b"\x00\xffhello")
    store.put_pdf(pid, "c.txt-0123.pdf", b"%PDF-1.4")
    store.put_report(pid, {"title": "T", "documents": ["a/b/c.txt"]})
    base = tmp_path / "root" / pid
    assert (base / "documents" / "a" / "b" / "c.txt").read_bytes() == b"\x00\xffhello"
    assert (base / "pdf" / "c.txt-0123.pdf").read_bytes() == b"%PDF-1.4"
    assert (base / "report.json").is_file()
    assert store.document_uri(pid, "a/b/c.txt") == (base / "documents" / "a" / "b" / "c.txt").as_uri()


def test_roundtrip(store: DocumentStore) -> None:
    pid = new_id()
    files = {"z.bin": bytes(range(256)), "dir/é ü.txt": "ünïcode".encode(), "dir/sub/empty": b""}
    for path, data in files.items():
        store.put_document(pid, path, data)
    assert store.list_documents(pid) == sorted(files)
    for path, data in files.items():
        assert store.get_document(pid, path) == data
        assert store.exists_document(pid, path)
    assert not store.exists_document(pid, "nope.txt")
    store.put_pdf(pid, "b.pdf", b"B")
    store.put_pdf(pid, "a.pdf", b"A")
    assert store.list_pdfs(pid) == ["a.pdf", "b.pdf"]
    assert store.get_pdf(pid, "a.pdf") == b"A"
    report = {"title": "Documents", "documents": list(files), "body": "naïve"}
    store.put_report(pid, report)
    assert store.get_report(pid) == report


def test_empty_patient(store: DocumentStore) -> None:
    pid = new_id()
    assert store.list_documents(pid) == [] and store.list_pdfs(pid) == []
    with pytest.raises(FileNotFoundError):
        store.get_report(pid)
    store.clear_patient(pid)


def test_second_run_replaces_first(store: DocumentStore) -> None:
    pid, other = new_id(), new_id()
    store.put_document(pid, "old/one.txt", b"1")
    store.put_pdf(pid, "one.pdf", b"1")
    store.put_report(pid, {"run": 1})
    store.put_document(other, "keep.txt", b"k")
    store.clear_patient(pid)
    assert store.list_documents(pid) == [] and store.list_pdfs(pid) == []
    with pytest.raises(FileNotFoundError):
        store.get_report(pid)
    store.put_document(pid, "new.txt", b"2")
    assert store.list_documents(pid) == ["new.txt"]
    assert store.list_documents(other) == ["keep.txt"]


@pytest.mark.parametrize(
    "path", ["", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a\\..\\b", "C:/x", "c:x", "a/\x00b", "."]
)
def test_unsafe_paths_are_refused(store: DocumentStore, path: str) -> None:
    pid = new_id()
    with pytest.raises(UnsafePath):
        store.put_document(pid, path, b"x")
    with pytest.raises(UnsafePath):
        store.get_document(pid, path)
    assert store.list_documents(pid) == []


def test_pdf_name_may_not_be_a_path(store: DocumentStore) -> None:
    with pytest.raises(UnsafePath):
        store.put_pdf(new_id(), "a/b.pdf", b"x")


@pytest.mark.parametrize("pid", ["", "../p", "a/b", "x" * 65])
def test_invalid_patient_id(store: DocumentStore, pid: str) -> None:
    with pytest.raises(InvalidPatientId):
        store.put_document(pid, "a.txt", b"x")


def test_nothing_written_outside_patient(tmp_path: Path) -> None:
    store = DocumentStore((tmp_path / "root").as_uri())
    for bad in ("../../escape.txt", "/abs.txt"):
        with pytest.raises(UnsafePath):
            store.put_document(new_id(), bad, b"x")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_threads(store: DocumentStore) -> None:
    pid = new_id()
    paths = [f"d{i % 7}/f{i}.txt" for i in range(200)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda p: store.put_document(pid, p, p.encode()), paths))
        list(pool.map(lambda p: store.put_pdf(pid, p.replace("/", "_") + ".pdf", b"%PDF"), paths))
    assert store.list_documents(pid) == sorted(paths)
    assert len(store.list_pdfs(pid)) == len(paths)
    assert all(store.get_document(pid, p) == p.encode() for p in paths)
