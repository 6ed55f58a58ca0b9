"""PDF names for extracted files, and the one-page PDF the dummy converter produces."""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_NAME_BYTES = 200
HASH_CHARS = 16
MAX_LINES = 48
MAX_LINE_CHARS = 95
_UNSAFE = re.compile(r"[^\w.\-]", re.UNICODE)


def _tail(text: str, limit: int) -> str:
    """The longest suffix of `text` that fits in `limit` UTF-8 bytes."""
    data = text.encode("utf-8")
    return data[max(0, len(data) - limit):].decode("utf-8", "ignore")


def pdf_name(source_path: str) -> str:
    """A readable, filesystem-safe, collision-free `<path>-<hash>.pdf` name of at most 200 bytes."""
    if not source_path:
        raise ValueError("source path must not be empty")
    # The hash covers the exact path, so names differ even where the readable part (or a
    # case-insensitive filesystem) would merge them: a/b.txt, a_b.txt, a/b.TXT.
    digest = hashlib.sha256(source_path.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]
    suffix = f"-{digest}.pdf"
    readable = _UNSAFE.sub("_", unicodedata.normalize("NFC", source_path).replace("/", "_"))
    # Keep the end, where the basename is; no leading dots, so no hidden files.
    readable = _tail(readable, MAX_NAME_BYTES - len(suffix)).lstrip(".")
    return f"{readable or 'file'}{suffix}"


def _pdf_text(text: str) -> bytes:
    """A PDF literal string in WinAnsi (Helvetica's encoding); other characters become '?'."""
    if len(text) > MAX_LINE_CHARS:
        text = text[: MAX_LINE_CHARS - 3] + "..."
    raw = text.encode("cp1252", "replace")
    raw = raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    return b"(" + re.sub(rb"[\x00-\x1f\x7f]", b"?", raw) + b")"


def make_pdf(title: str, lines: list[str]) -> bytes:
    """A valid one-page PDF 1.4 (A4, Helvetica) showing the title and the lines."""
    shown = list(lines[:MAX_LINES])
    if len(lines) > MAX_LINES:
        shown.append(f"... and {len(lines) - MAX_LINES} more lines")
    ops = [b"BT", b"/F1 16 Tf", b"50 790 Td", _pdf_text(title) + b" Tj", b"/F1 10 Tf", b"0 -28 Td"]
    for line in shown:
        ops += [_pdf_text(line) + b" Tj", b"0 -14 Td"]
    ops.append(b"ET")
    content = b"\n".join(ops) + b"\n"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"endstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
