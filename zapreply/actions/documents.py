"""A knowledge document's text: read from what an admin uploads (plain text, Markdown, PDF, a
CSV product list, HTML) and split into the passages a search returns. Every refusal is an
`Invalid` saying why, so the admin API answers 400 and the CLI exits 2, before anything is
stored."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePath

from zapreply.actions.errors import Invalid

# An upload larger than this is refused unread: a price list or a policy is kilobytes; a
# scanned catalogue of megabytes is images, which give no text anyway.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# The text kept of a document, after extraction: about 300 pages.
MAX_TEXT_CHARS = 1_000_000
MAX_TITLE_CHARS = 200
# A passage: about a paragraph or two, enough to answer from, small enough that five of them
# cost the model little.
PASSAGE_CHARS = 1200

KINDS = ("text", "markdown", "pdf", "csv", "html")
_BY_SUFFIX = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown",
              ".pdf": "pdf", ".csv": "csv", ".html": "html", ".htm": "html"}
_BY_MIMETYPE = {"text/plain": "text", "text/markdown": "markdown", "text/x-markdown": "markdown",
                "application/pdf": "pdf", "text/csv": "csv", "text/html": "html",
                "application/xhtml+xml": "html"}


@dataclass(frozen=True)
class Document:
    title: str
    kind: str
    text: str
    filename: str | None = None


def from_text(title: object, content: object) -> Document:
    """A document given as JSON `{"title", "content"}` (content: plain text or Markdown)."""
    if not isinstance(content, str):
        raise Invalid("'content' must be a string")
    return Document(_title(title), "text", _checked_text(content))


def from_upload(data: bytes, *, filename: str | None, mimetype: str | None,
                title: object = None) -> Document:
    """A document uploaded as a file: its kind from the file name's extension, else its MIME
    type; its title given, else the file name."""
    kind = kind_of(filename, mimetype)
    if len(data) > MAX_UPLOAD_BYTES:
        raise Invalid(f"document too large: {len(data)} bytes, at most {MAX_UPLOAD_BYTES}")
    if not data.strip():
        raise Invalid("document is empty")
    text = _READERS[kind](data)
    name = PurePath(filename).name if filename else None
    return Document(_title(title if title not in (None, "") else name), kind,
                    _checked_text(text), name)


def kind_of(filename: str | None, mimetype: str | None) -> str:
    suffix = PurePath(filename or "").suffix.lower()
    kind = _BY_SUFFIX.get(suffix) or _BY_MIMETYPE.get((mimetype or "").split(";")[0].strip())
    if kind is None:
        shown = suffix or mimetype or "unknown"
        raise Invalid(f"unsupported document type {shown!r}: use text (.txt), Markdown (.md), "
                      "PDF (.pdf), CSV (.csv) or HTML (.html)")
    return kind


def _title(title: object) -> str:
    if not isinstance(title, str) or not title.strip():
        raise Invalid("'title' must be a non-empty string")
    title = " ".join(title.split())
    if len(title) > MAX_TITLE_CHARS:
        raise Invalid(f"'title' must be at most {MAX_TITLE_CHARS} characters")
    return title


def _checked_text(text: str) -> str:
    text = text.replace("\x00", "").replace("\r\n", "\n").strip()
    if not text:
        raise Invalid("document is empty (no text in it)")
    if len(text) > MAX_TEXT_CHARS:
        raise Invalid(f"document too large: {len(text)} characters of text, at most "
                      f"{MAX_TEXT_CHARS}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid("document is not valid Unicode text") from None
    return text


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise Invalid("document is not text (not UTF-8 or Windows-1252)")


def _read_text(data: bytes) -> str:
    if b"\x00" in data[:4096]:
        raise Invalid("document is not text (binary content)")
    return _decode(data)


def _read_pdf(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    if not data.lstrip().startswith(b"%PDF"):
        raise Invalid("unreadable PDF: not a PDF file")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise Invalid("unreadable PDF: it is encrypted")
        pages = [page.extract_text() or "" for page in reader.pages]
    except Invalid:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError,
            RecursionError) as exc:
        raise Invalid(f"unreadable PDF: {type(exc).__name__}") from None
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    if not text:
        raise Invalid("unreadable PDF: no text in it (a scan needs OCR first)")
    return text


def _read_csv(data: bytes) -> str:
    """One line per row, `column: value; …`, so each product's line reads on its own in a
    passage."""
    text = _read_text(data)
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    try:
        rows = [row for row in csv.reader(io.StringIO(text), dialect)
                if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise Invalid(f"unreadable CSV: {exc}") from None
    if not rows:
        raise Invalid("document is empty")
    header, *body = rows
    if not body:
        return "; ".join(header)
    lines = []
    for row in body:
        cells = [f"{name.strip()}: {value.strip()}" if name.strip() else value.strip()
                 for name, value in zip(header, row, strict=False) if value.strip()]
        lines.append("; ".join(cells))
    return "\n".join(lines)


class _HTMLText(HTMLParser):
    _SKIP = frozenset({"script", "style", "head", "template", "noscript", "svg"})
    _BLOCK = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
                        "section", "article", "table", "ul", "ol", "dd", "dt", "pre"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skipping += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def _read_html(data: bytes) -> str:
    parser = _HTMLText()
    parser.feed(_read_text(data))
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


_READERS = {"text": _read_text, "markdown": _read_text, "pdf": _read_pdf, "csv": _read_csv,
            "html": _read_html}


def split_passages(text: str, size: int = PASSAGE_CHARS) -> list[str]:
    """Paragraphs packed into passages of at most `size` characters (a longer paragraph is cut
    at line, then sentence, then word boundaries)."""
    pieces: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if paragraph:
            pieces.extend(_cut(paragraph, size))
    passages: list[str] = []
    for piece in pieces:
        if passages and len(passages[-1]) + 2 + len(piece) <= size:
            passages[-1] += "\n\n" + piece
        else:
            passages.append(piece)
    return passages


def _cut(text: str, size: int) -> list[str]:
    if len(text) <= size:
        return [text]
    for separator in ("\n", ". ", " "):
        parts = text.split(separator)
        if len(parts) > 1:
            out: list[str] = []
            current = ""
            for part in parts:
                candidate = f"{current}{separator}{part}" if current else part
                if len(candidate) <= size:
                    current = candidate
                    continue
                if current:
                    out.append(current.strip())
                current = part
            if current:
                out.append(current.strip())
            return [chunk for piece in out for chunk in _cut(piece, size) if chunk]
    return [text[i:i + size] for i in range(0, len(text), size)]
