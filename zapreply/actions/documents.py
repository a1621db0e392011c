"""A knowledge document's text: read from what an admin uploads (plain text, Markdown, PDF, a
CSV product list, HTML) and split into the passages a search returns. Every refusal is an
`Invalid` saying why, so the admin API answers 400 and the CLI exits 2, before anything is
stored."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePath
from urllib.parse import urlsplit

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
# A document read from a URL (zapreply.actions.knowledge_urls): fetched again every
# refresh_hours, 24 unless said (0 or null: once); at most monthly.
MAX_URL_CHARS = 2000
DEFAULT_REFRESH_HOURS = 24
MAX_REFRESH_HOURS = 720

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


@dataclass(frozen=True)
class Source:
    """A document to be read from `url` by a worker, again every `refresh_hours` (None: once)."""

    url: str
    title: str
    refresh_hours: int | None


_UNSET = object()


def from_url(url: object, title: object = None, refresh_hours: object = _UNSET) -> Source:
    """A document given as JSON `{"url", "title"?, "refresh_hours"?}`: the URL checked here
    (https, a host, no credentials, at most MAX_URL_CHARS); where it may be fetched from is
    decided when it is fetched (the address it resolves to then)."""
    if not isinstance(url, str) or not url.strip():
        raise Invalid("'url' must be a non-empty string")
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise Invalid(f"'url' must be at most {MAX_URL_CHARS} characters")
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise Invalid("'url' must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        raise Invalid("'url' is not a valid URL") from None
    if parts.scheme.lower() != "https":
        raise Invalid("'url' must start with https:// (other schemes are not fetched)")
    if not parts.hostname:
        raise Invalid("'url' must name a host")
    if parts.username is not None or parts.password is not None:
        raise Invalid("'url' must not carry a user name or password")
    if refresh_hours is _UNSET:
        hours: int | None = DEFAULT_REFRESH_HOURS
    elif refresh_hours is None or refresh_hours == 0 and not isinstance(refresh_hours, bool):
        hours = None
    elif (not isinstance(refresh_hours, int) or isinstance(refresh_hours, bool)
          or not 1 <= refresh_hours <= MAX_REFRESH_HOURS):
        raise Invalid(f"'refresh_hours' must be a whole number from 1 to {MAX_REFRESH_HOURS}, "
                      "or 0 or null to fetch once")
    else:
        hours = refresh_hours
    shown = f"{parts.hostname}{parts.path}".rstrip("/")
    return Source(url, _title(title if title not in (None, "") else shown[:MAX_TITLE_CHARS]),
                  hours)


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


def digest(text: str) -> str:
    """A document's text's SHA-256 (hex): a fetch that reads the same text changes nothing."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
