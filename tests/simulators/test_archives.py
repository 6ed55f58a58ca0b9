"""Generated archives: valid, deterministic, varied, and hostile when asked."""

from __future__ import annotations

import io
import stat
import zipfile

import pytest

from patient_docs.simulators.archives import HOSTILE_KINDS, SYMLINK_TARGET, TOO_MANY_FILES, build_archive


def _zip(data: bytes) -> zipfile.ZipFile:
    zf = zipfile.ZipFile(io.BytesIO(data))
    assert zf.testzip() is None
    return zf


@pytest.mark.parametrize("files", [0, 1, 30, 250])
def test_requested_file_count(files: int) -> None:
    infos = _zip(build_archive(files, "seed")).infolist()
    assert len(infos) == files
    assert len({i.filename for i in infos}) == files
    assert all(100 <= i.file_size <= 4096 for i in infos)


def test_deterministic_per_seed() -> None:
    assert build_archive(20, "a") == build_archive(20, "a")
    assert build_archive(20, "a") != build_archive(20, "b")


def test_names_are_varied() -> None:
    names = _zip(build_archive(300, "varied")).namelist()
    assert any(" " in n for n in names)
    assert any(not n.isascii() for n in names)
    assert any(n.rsplit("/", 1)[-1].count(".") > 1 for n in names)
    assert {n.rsplit(".", 1)[-1] for n in names} >= {"txt", "docx", "jpg", "html", "xml"}
    depths = {n.count("/") for n in names}
    assert depths == {0, 1, 2, 3}
    assert not any(n.startswith("/") or ".." in n.split("/") for n in names)


def test_unknown_hostile_kind() -> None:
    with pytest.raises(ValueError):
        build_archive(1, "x", "nope")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "entry"), [("dotdot", "../evil.txt"), ("absolute", "/etc/evil"), ("drive", "C:\\evil.txt")]
)
def test_path_escapes(kind: str, entry: str) -> None:
    zf = _zip(build_archive(3, "h", kind))  # type: ignore[arg-type]
    assert entry in zf.namelist()
    assert len(zf.namelist()) == 4


def test_symlink() -> None:
    zf = _zip(build_archive(2, "h", "symlink"))
    links = [i for i in zf.infolist() if stat.S_ISLNK(i.external_attr >> 16)]
    assert len(links) == 1
    assert zf.read(links[0]) == SYMLINK_TARGET.encode()


def test_bomb_size_is_configurable_and_compresses_well() -> None:
    size = 8 * 2**20
    data = build_archive(1, "h", "bomb", bomb_bytes=size)
    bomb = next(i for i in _zip(data).infolist() if i.file_size == size)
    assert bomb.compress_size < size // 100
    assert len(data) < 100_000


def test_too_many() -> None:
    assert len(_zip(build_archive(5, "h", "too_many")).namelist()) == TOO_MANY_FILES


def test_hostile_kinds_listed() -> None:
    assert set(HOSTILE_KINDS) == {"dotdot", "absolute", "symlink", "bomb", "too_many", "drive"}
