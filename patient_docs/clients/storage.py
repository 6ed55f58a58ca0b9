"""Document storage on any fsspec URL: P/documents/<path>, P/pdf/<name>.pdf, P/report.json."""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import fsspec.core

from patient_docs.errors import PatientDocsError
from patient_docs.models import validate_patient_id

_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UnsafePath(PatientDocsError, ValueError):
    """A storage path could escape the patient's folder."""


def safe_relative_path(path: str) -> str:
    """Return `path` if it is a clean relative posix path, else raise UnsafePath."""
    if not isinstance(path, str) or not path:
        raise UnsafePath(f"empty storage path {path!r}")
    if path.startswith("/") or "\\" in path or _DRIVE.match(path) or _CONTROL.search(path):
        raise UnsafePath(f"unsafe storage path {path!r}: absolute, backslash, drive or control character")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise UnsafePath(f"unsafe storage path {path!r}: empty, '.' or '..' component")
    return path


class DocumentStore:
    """One storage root; every path is confined to its patient's folder."""

    def __init__(self, url: str):
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")
        self._guard = threading.Lock()
        self._locks: dict[str, threading.RLock] = {}

    def _lock(self, patient_id: str) -> threading.RLock:
        # One lock per patient: clearing never interleaves with that patient's writes in this process.
        with self._guard:
            return self._locks.setdefault(patient_id, threading.RLock())

    def _path(self, patient_id: str, *parts: str) -> str:
        validate_patient_id(patient_id)
        return "/".join([self.root, patient_id, *parts])

    def _doc(self, patient_id: str, path: str) -> str:
        return self._path(patient_id, "documents", safe_relative_path(path))

    def _pdf(self, patient_id: str, name: str) -> str:
        if "/" in name:
            raise UnsafePath(f"PDF name {name!r} must not contain '/'")
        return self._path(patient_id, "pdf", safe_relative_path(name))

    def _write(self, patient_id: str, full: str, data: bytes) -> None:
        with self._lock(patient_id):
            self.fs.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
            self.fs.pipe_file(full, bytes(data))

    def _list(self, folder: str) -> list[str]:
        try:
            found = self.fs.find(folder)
        except FileNotFoundError:
            return []
        prefix = self.fs._strip_protocol(folder).rstrip("/") + "/"
        return sorted(p[len(prefix):] for p in found if p.startswith(prefix))

    def clear_patient(self, patient_id: str) -> None:
        """Remove the patient's documents, PDFs and report, so a new run never mixes with an old one."""
        with self._lock(patient_id):
            for part in ("documents", "pdf", "report.json"):
                target = self._path(patient_id, part)
                try:
                    if self.fs.exists(target):
                        self.fs.rm(target, recursive=True)
                except FileNotFoundError:
                    pass

    def put_document(self, patient_id: str, path: str, data: bytes) -> None:
        """Store one extracted file at P/documents/<path>, byte for byte."""
        self._write(patient_id, self._doc(patient_id, path), data)

    def get_document(self, patient_id: str, path: str) -> bytes:
        """The bytes of one stored document."""
        return self.fs.cat_file(self._doc(patient_id, path))

    def exists_document(self, patient_id: str, path: str) -> bool:
        """Whether P/documents/<path> is stored."""
        return self.fs.isfile(self._doc(patient_id, path))

    def list_documents(self, patient_id: str) -> list[str]:
        """Stored document paths relative to P/documents/, sorted."""
        return self._list(self._path(patient_id, "documents"))

    def document_uri(self, patient_id: str, path: str) -> str:
        """The full URL of a stored document."""
        return self.fs.unstrip_protocol(self._doc(patient_id, path))

    def put_pdf(self, patient_id: str, name: str, data: bytes) -> None:
        """Store one PDF at P/pdf/<name>."""
        self._write(patient_id, self._pdf(patient_id, name), data)

    def get_pdf(self, patient_id: str, name: str) -> bytes:
        """The bytes of one stored PDF."""
        return self.fs.cat_file(self._pdf(patient_id, name))

    def list_pdfs(self, patient_id: str) -> list[str]:
        """Stored PDF names, sorted."""
        return self._list(self._path(patient_id, "pdf"))

    def put_report(self, patient_id: str, report: dict[str, Any]) -> None:
        """Store the report as P/report.json."""
        data = json.dumps(report, indent=2, ensure_ascii=False, default=str).encode("utf-8")
        self._write(patient_id, self._path(patient_id, "report.json"), data)

    def get_report(self, patient_id: str) -> dict[str, Any]:
        """The stored report; FileNotFoundError if there is none."""
        return json.loads(self.fs.cat_file(self._path(patient_id, "report.json")))
