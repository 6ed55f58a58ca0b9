"""Deterministic zip archives for the DocumentExchange simulator, including hostile variants."""

from __future__ import annotations

import io
import random
import stat
import zipfile
from typing import Literal, get_args

HostileKind = Literal["dotdot", "absolute", "symlink", "bomb", "too_many", "drive"]
HOSTILE_KINDS: tuple[str, ...] = get_args(HostileKind)
TOO_MANY_FILES = 3001
DEFAULT_BOMB_BYTES = 300 * 2**20

# The entry each hostile kind adds; "bomb" and "too_many" are about sizes and counts instead.
HOSTILE_ENTRIES: dict[str, str] = {
    "dotdot": "../evil.txt",
    "absolute": "/etc/evil",
    "symlink": "link-to-passwd",
    "drive": "C:\\evil.txt",
    "bomb": "bomb.txt",
}
SYMLINK_TARGET = "../../../../etc/passwd"

_STEMS = [
    "report", "Befund", "lab results", "scan", "Arztbrief", "discharge summary", "résumé",
    "Überweisung", "note.final", "x-ray", "MRT Kopf", "letter", "radiología", "検査結果", "v1.2.notes",
]
_FOLDERS = ["2021", "Klinik Süd", "lab", "imaging", "old.records", "GP letters", "misc", "über"]
_EXTENSIONS = [".txt", ".docx", ".jpg", ".html", ".xml", ".pdf", ".TXT"]
_TEXT_EXTENSIONS = {".txt", ".TXT", ".html", ".xml"}


def file_names(count: int, seed: str | int) -> list[str]:
    """`count` unique, varied archive paths (folders up to 3 deep), the same for the same seed."""
    rng = random.Random(f"names:{seed}")
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        folders = [rng.choice(_FOLDERS) for _ in range(rng.choice([0, 0, 1, 2, 3]))]
        stem = rng.choice(_STEMS)
        name = "/".join([*folders, f"{stem} {len(names):04d}{rng.choice(_EXTENSIONS)}"])
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _content(rng: random.Random, name: str) -> bytes:
    size = rng.randint(100, 4096)
    if any(name.endswith(ext) for ext in _TEXT_EXTENSIONS):
        line = f"{name}: simulated document line.\n".encode()
        return (line * (size // len(line) + 1))[:size]
    return rng.randbytes(size)


def _write_bomb(zf: zipfile.ZipFile, name: str, size: int) -> None:
    chunk = bytes(2**20)
    info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w", force_zip64=size >= 2**31) as out:
        left = size
        while left > 0:
            out.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)


def build_archive(
    files: int,
    seed: str | int,
    hostile: HostileKind | None = None,
    *,
    bomb_bytes: int = DEFAULT_BOMB_BYTES,
) -> bytes:
    """Zip bytes with `files` regular files (0 to 3000), plus the entry a hostile kind asks for."""
    if hostile is not None and hostile not in HOSTILE_KINDS:
        raise ValueError(f"unknown hostile kind {hostile!r}; expected one of {HOSTILE_KINDS}")
    count = TOO_MANY_FILES if hostile == "too_many" else files
    rng = random.Random(f"content:{seed}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in file_names(count, seed):
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, _content(rng, name))
        if hostile == "bomb":
            _write_bomb(zf, HOSTILE_ENTRIES["bomb"], bomb_bytes)
        elif hostile == "symlink":
            info = zipfile.ZipInfo(HOSTILE_ENTRIES["symlink"], date_time=(2024, 1, 1, 0, 0, 0))
            info.create_system = 3  # Unix, so extractors honour the mode bits below.
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, SYMLINK_TARGET)
        elif hostile in ("dotdot", "absolute", "drive"):
            # ZipInfo keeps the name verbatim; ZipFile.write would sanitise it.
            zf.writestr(zipfile.ZipInfo(HOSTILE_ENTRIES[hostile], date_time=(2024, 1, 1, 0, 0, 0)), b"evil\n")
    return buffer.getvalue()
