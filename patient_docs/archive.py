"""Safe zip extraction: every entry is checked before anything is written, every read is bounded."""

from __future__ import annotations

import re
import stat
import unicodedata
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from os import PathLike

from patient_docs.errors import HostileArchive

CHUNK = 1 << 16
MAX_RATIO = 200.0
RATIO_FLOOR = 1 << 20
MAX_COMPONENT_BYTES = 255
_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

ZipPath = str | PathLike[str]


def _is_dir(info: zipfile.ZipInfo) -> bool:
    return info.is_dir() or stat.S_ISDIR(info.external_attr >> 16)


def _safe_path(info: zipfile.ZipInfo) -> str:
    """The entry's normalised relative posix path, or HostileArchive naming the rule."""
    name = info.filename

    def refuse(rule: str) -> HostileArchive:
        return HostileArchive(f"{rule}: entry {name!r}")

    if not name.strip("/"):
        raise refuse("empty name")
    if name.startswith("/"):
        raise refuse("absolute path")
    if _DRIVE.match(name):
        raise refuse("drive letter in path")
    if "\\" in name:
        raise refuse("backslash in name")
    if _CONTROL.search(name):
        raise refuse("control character in name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise refuse("'..' in path")
    if any(_DRIVE.match(p) for p in parts):
        raise refuse("drive letter in path")
    if any(len(p.encode("utf-8", "surrogateescape")) > MAX_COMPONENT_BYTES for p in parts):
        raise refuse(f"path component longer than {MAX_COMPONENT_BYTES} bytes")
    if not parts:
        raise refuse("empty name")
    return "/".join(parts)


def _open(zip_path: ZipPath) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
        raise HostileArchive(f"not a readable zip archive: {exc}") from exc


def check_archive(
    zip_path: ZipPath,
    *,
    max_files: int,
    max_file_bytes: int,
    max_archive_bytes: int,
    max_ratio: float = MAX_RATIO,
    ratio_floor: int = RATIO_FLOOR,
) -> list[str]:
    """Validate every entry up front; return the files' safe relative paths in archive order."""
    with _open(zip_path) as zf:
        infos = zf.infolist()
    paths: list[str] = []
    seen: dict[str, str] = {}
    folders: set[str] = set()
    total = 0
    for info in infos:
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind == stat.S_IFLNK:
            raise HostileArchive(f"symbolic link: entry {info.filename!r}")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise HostileArchive(f"not a regular file (mode {oct(kind)}): entry {info.filename!r}")
        path = _safe_path(info)
        if _is_dir(info):
            continue
        if info.flag_bits & 0x1:
            raise HostileArchive(f"encrypted entry: {info.filename!r}")
        if info.compress_type not in _METHODS:
            raise HostileArchive(f"unsupported compression method {info.compress_type}: entry {info.filename!r}")
        # NFC so that visually identical names (composed vs decomposed accents) count as one.
        key = unicodedata.normalize("NFC", path)
        if key in seen:
            raise HostileArchive(f"duplicate name after normalisation: entry {info.filename!r} (as {seen[key]!r})")
        seen[key] = info.filename
        parts = key.split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
        paths.append(path)
        if len(paths) > max_files:
            raise HostileArchive(f"more than {max_files} files: entry {info.filename!r}")
        if info.file_size > max_file_bytes:
            raise HostileArchive(
                f"file larger than {max_file_bytes} bytes ({info.file_size}): entry {info.filename!r}"
            )
        total += info.file_size
        if total > max_archive_bytes:
            raise HostileArchive(f"archive larger than {max_archive_bytes} bytes at entry {info.filename!r}")
        if info.file_size > ratio_floor and info.file_size > max_ratio * max(info.compress_size, 1):
            raise HostileArchive(
                f"compression ratio above {max_ratio:g} (zip bomb?): entry {info.filename!r} "
                f"({info.compress_size} -> {info.file_size} bytes)"
            )
    clash = folders & seen.keys()
    if clash:
        name = min(clash)
        raise HostileArchive(f"name used both as file and as folder: entry {seen[name]!r}")
    return paths


def iter_files(
    zip_path: ZipPath, paths: Iterable[str], *, max_file_bytes: int, max_archive_bytes: int | None = None
) -> Iterator[tuple[str, bytes]]:
    """Yield (path, bytes) for the checked paths, bounding the bytes actually decompressed."""
    with _open(zip_path) as zf:
        entries = {}
        for info in zf.infolist():
            if not _is_dir(info):
                entries.setdefault(_safe_path(info), info)
        total = 0
        for path in paths:
            info = entries.get(path)
            if info is None:
                raise HostileArchive(f"entry not in archive: {path!r}")
            chunks: list[bytes] = []
            size = 0
            try:
                with zf.open(info) as stream:
                    while chunk := stream.read(CHUNK):
                        size += len(chunk)
                        if size > max_file_bytes:
                            raise HostileArchive(
                                f"file decompresses to more than {max_file_bytes} bytes: entry {path!r}"
                            )
                        chunks.append(chunk)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
                raise HostileArchive(f"unreadable entry {path!r}: {exc}") from exc
            total += size
            if max_archive_bytes is not None and total > max_archive_bytes:
                raise HostileArchive(f"archive decompresses to more than {max_archive_bytes} bytes at {path!r}")
            yield path, b"".join(chunks)
