"""PDF names are safe and collision-free; the dummy PDF is well formed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from patient_docs.pdf import make_pdf, pdf_name

SAFE = re.compile(r"^[\w.\-]+\.pdf$")


def test_names_are_deterministic_readable_and_safe() -> None:
    name = pdf_name("Akte/Befund 2024.docx")
    assert name == pdf_name("Akte/Befund 2024.docx")
    assert name.startswith("Akte_Befund_2024.docx-") and name.endswith(".pdf")
    for source in ["a/b.txt", "../../x", "/abs/y", "a\\b", "con:x", ".hidden", "ü/名前.txt", "a\x00b"]:
        produced = pdf_name(source)
        assert SAFE.match(produced), produced
        assert "/" not in produced and "\\" not in produced and not produced.startswith(".")


def test_names_never_collide() -> None:
    sources = ["a/b.txt", "a_b.txt", "a/b.TXT", "A/b.txt", "a b.txt", "a/b.txt.pdf", "a/b", "café", "cafe\u0301"]
    sources += [f"dir{i % 3}/file{i}.txt" for i in range(3000)]
    names = [pdf_name(s) for s in sources]
    assert len(set(names)) == len(sources)
    # Also distinct on a case-insensitive filesystem.
    assert len({n.casefold() for n in names}) == len(sources)


def test_long_names_are_truncated_keeping_the_basename() -> None:
    deep = "/".join(["folder"] * 100) + "/Entlassungsbrief.pdf"
    name = pdf_name(deep)
    assert len(name.encode()) <= 200
    assert "Entlassungsbrief.pdf-" in name
    other = pdf_name("x" + deep)
    assert other != name and len(other.encode()) <= 200
    wide = pdf_name("ü" * 500 + ".txt")
    assert len(wide.encode()) <= 200 and wide.encode().decode() == wide and ".txt-" in wide


def test_empty_source_is_refused() -> None:
    with pytest.raises(ValueError):
        pdf_name("")


def parse_xref(pdf: bytes) -> dict[int, int]:
    """Object number -> byte offset, read from the file's own xref table."""
    start = int(re.search(rb"startxref\s+(\d+)\s+%%EOF\s*$", pdf)[1])
    assert pdf[start:].startswith(b"xref")
    header = re.match(rb"xref\s+(\d+) (\d+)\s+", pdf[start:])
    first, count = int(header[1]), int(header[2])
    table = pdf[start + header.end(): start + header.end() + 20 * count]
    entries = [table[i * 20:(i + 1) * 20] for i in range(count)]
    assert entries[0] == b"0000000000 65535 f \n"
    assert all(len(e) == 20 and e.endswith(b" n \n") for e in entries[1:])
    return {first + i: int(e[:10]) for i, e in enumerate(entries) if i}


@pytest.mark.parametrize(
    ("title", "lines"),
    [("Report", ["one", "two"]), ("Ümlaut (paren) \\ back", ["名前", "tab\there"]), ("empty", [])],
)
def test_pdf_structure(title: str, lines: list[str]) -> None:
    pdf = make_pdf(title, lines)
    assert pdf.startswith(b"%PDF-1.4\n")
    offsets = parse_xref(pdf)
    assert sorted(offsets) == [1, 2, 3, 4, 5]
    for number, offset in offsets.items():
        assert pdf[offset:].startswith(b"%d 0 obj" % number)
    assert re.search(rb"trailer\s*<< /Size 6 /Root 1 0 R >>", pdf)
    stream = re.search(rb"<< /Length (\d+) >>\nstream\n", pdf)
    length = int(stream[1])
    assert pdf[stream.end() + length:].startswith(b"endstream")
    assert pdf.count(b" Tj") == 1 + len(lines)


def test_many_lines_fit_one_page() -> None:
    pdf = make_pdf("many", [f"line {i}" for i in range(500)])
    assert pdf.count(b"/Type /Page ") == 1
    assert b"more lines" in pdf


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext (poppler-utils) is not installed")
def test_pdftotext_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "out.pdf"
    path.write_bytes(make_pdf("Hello Title", ["first line", "Grüße (2)"]))
    result = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True)
    assert "Hello Title" in result.stdout and "first line" in result.stdout and "Grüße (2)" in result.stdout
    assert "Syntax Error" not in result.stderr
