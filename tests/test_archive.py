"""Safe zip extraction: hostile archives are refused before anything is read or written."""

from __future__ import annotations

import stat
import struct
import zipfile
from pathlib import Path

import pytest

from patient_docs.archive import check_archive, iter_files
from patient_docs.errors import HostileArchive

LIMITS = dict(max_files=10, max_file_bytes=10_000, max_archive_bytes=50_000)


Entries = list[tuple[str | zipfile.ZipInfo, bytes]]


def make_zip(path: Path, entries: Entries, method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def unix_entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def test_empty_archive(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "empty.zip", [])
    assert check_archive(archive, **LIMITS) == []
    assert list(iter_files(archive, [], max_file_bytes=10)) == []


def test_nested_folders_and_unicode(tmp_path: Path) -> None:
    files = {
        "top.txt": b"top",
        "Akte/Befund Ärztin.pdf": "über".encode(),
        "Akte/年/記録.txt": bytes(range(256)) * 3,
        "a/b/c/d/e/empty": b"",
        "case/b.txt": b"lower",
        "case/b.TXT": b"upper",
    }
    archive = make_zip(tmp_path / "nested.zip", [("Akte/", b""), ("a/b/", b""), *files.items()])
    paths = check_archive(archive, **LIMITS)
    assert paths == list(files)
    assert dict(iter_files(archive, paths, max_file_bytes=10_000)) == files


def test_dot_components_are_normalised(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "dots.zip", [("./a//b.txt", b"x")])
    paths = check_archive(archive, **LIMITS)
    assert paths == ["a/b.txt"]
    assert list(iter_files(archive, paths, max_file_bytes=10)) == [("a/b.txt", b"x")]


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("/etc/passwd", "absolute path"),
        ("//server/share.txt", "absolute path"),
        ("../escape.txt", "'..'"),
        ("a/../../escape.txt", "'..'"),
        ("a/..", "'..'"),
        ("C:/Windows/evil.txt", "drive letter"),
        ("c:evil.txt", "drive letter"),
        ("a/D:/evil.txt", "drive letter"),
        ("..\\..\\evil.txt", "backslash"),
        ("a\\b.txt", "backslash"),
        ("a/\x01b.txt", "control character"),
        ("x" * 256, "longer than 255"),
    ],
)
def test_hostile_names(tmp_path: Path, name: str, rule: str) -> None:
    archive = make_zip(tmp_path / "bad.zip", [("fine.txt", b"ok"), (name, b"evil")])
    with pytest.raises(HostileArchive, match=rule) as err:
        check_archive(archive, **LIMITS)
    assert repr(name) in str(err.value)


def test_symlink(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "link.zip", [(unix_entry("link", stat.S_IFLNK | 0o777), b"/etc/passwd")])
    with pytest.raises(HostileArchive, match="symbolic link: entry 'link'"):
        check_archive(archive, **LIMITS)


@pytest.mark.parametrize("kind", [stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK])
def test_other_non_regular_entries(tmp_path: Path, kind: int) -> None:
    archive = make_zip(tmp_path / "dev.zip", [(unix_entry("dev", kind | 0o644), b"")])
    with pytest.raises(HostileArchive, match="not a regular file.*'dev'"):
        check_archive(archive, **LIMITS)


def test_regular_unix_modes_and_directories_pass(tmp_path: Path) -> None:
    entries: Entries = [(unix_entry("d/", stat.S_IFDIR | 0o755), b""), (unix_entry("d/f", stat.S_IFREG | 0o644), b"f")]
    archive = make_zip(tmp_path / "modes.zip", entries)
    assert check_archive(archive, **LIMITS) == ["d/f"]


@pytest.mark.parametrize(
    "names",
    [
        ["same.txt", "same.txt"],
        ["a/b.txt", "a//b.txt"],
        ["a/b.txt", "./a/b.txt"],
        ["caf\u00e9.txt", "cafe\u0301.txt"],
    ],
)
@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_duplicates_after_normalisation(tmp_path: Path, names: list[str]) -> None:
    archive = make_zip(tmp_path / "dup.zip", [(n, b"x") for n in names])
    with pytest.raises(HostileArchive, match="duplicate name"):
        check_archive(archive, **LIMITS)


def test_file_and_folder_with_one_name(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "clash.zip", [("a", b"file"), ("a/b.txt", b"x")])
    with pytest.raises(HostileArchive, match="both as file and as folder: entry 'a'"):
        check_archive(archive, **LIMITS)


def test_too_many_files(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "many.zip", [(f"f{i}.txt", b"x") for i in range(11)])
    with pytest.raises(HostileArchive, match="more than 10 files: entry 'f10.txt'"):
        check_archive(archive, **LIMITS)
    assert len(check_archive(archive, **{**LIMITS, "max_files": 11})) == 11


def test_declared_file_too_large(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "big.zip", [("big.bin", b"y" * 10_001)])
    with pytest.raises(HostileArchive, match="file larger than 10000 bytes.*'big.bin'"):
        check_archive(archive, **LIMITS)


def test_declared_total_too_large(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "total.zip", [(f"f{i}", b"z" * 9_000) for i in range(6)])
    with pytest.raises(HostileArchive, match="archive larger than 50000 bytes at entry 'f5'"):
        check_archive(archive, **LIMITS)


def test_bomb_ratio(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "bomb.zip", [("zeros.bin", bytes(200_000))])
    limits = dict(max_files=10, max_file_bytes=1_000_000, max_archive_bytes=1_000_000)
    with pytest.raises(HostileArchive, match="compression ratio.*'zeros.bin'"):
        check_archive(archive, **limits, max_ratio=100, ratio_floor=1_000)
    # Below the floor, small highly compressible files are fine.
    assert check_archive(archive, **limits, max_ratio=100, ratio_floor=1_000_000) == ["zeros.bin"]


def test_actual_size_enforced_while_reading(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "read.zip", [("a.bin", bytes(5_000)), ("b.bin", b"b")])
    paths = check_archive(archive, **LIMITS)
    stream = iter_files(archive, paths, max_file_bytes=4_999)
    with pytest.raises(HostileArchive, match="more than 4999 bytes: entry 'a.bin'"):
        next(stream)
    with pytest.raises(HostileArchive, match="more than 6000 bytes"):
        list(iter_files(archive, paths * 2, max_file_bytes=10_000, max_archive_bytes=6_000))


def test_lying_header_is_not_trusted(tmp_path: Path) -> None:
    """The central directory claims 10 bytes; the data inflates to 5000."""
    archive = make_zip(tmp_path / "liar.zip", [("liar.bin", bytes(5_000))])
    raw = bytearray(archive.read_bytes())
    central = raw.index(b"PK\x01\x02")
    struct.pack_into("<I", raw, central + 24, 10)  # uncompressed size in the central directory
    local = raw.index(b"PK\x03\x04")
    struct.pack_into("<I", raw, local + 22, 10)
    archive.write_bytes(bytes(raw))
    paths = check_archive(archive, **{**LIMITS, "max_file_bytes": 100})
    with pytest.raises(HostileArchive, match="liar.bin"):
        list(iter_files(archive, paths, max_file_bytes=100))


def test_unknown_path_and_not_a_zip(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "one.zip", [("a", b"a")])
    with pytest.raises(HostileArchive, match="not in archive"):
        list(iter_files(archive, ["b"], max_file_bytes=10))
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"this is not a zip")
    with pytest.raises(HostileArchive, match="not a readable zip"):
        check_archive(junk, **LIMITS)


def test_encrypted_entry(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "enc.zip", [("secret", b"s")], method=zipfile.ZIP_STORED)
    raw = bytearray(archive.read_bytes())
    for sig, offset in ((b"PK\x01\x02", 8), (b"PK\x03\x04", 6)):
        at = raw.index(sig) + offset
        struct.pack_into("<H", raw, at, struct.unpack_from("<H", raw, at)[0] | 1)
    archive.write_bytes(bytes(raw))
    with pytest.raises(HostileArchive, match="encrypted entry: 'secret'"):
        check_archive(archive, **LIMITS)
