"""Uploaded files → plain-text sections (with page or heading where the format has one).

Two steps with different failure modes: `detect_file_type` runs in the web request on the first
bytes and rejects what is plainly not the declared type (415), while `parse_document` runs in
the worker and turns every way a file can be unreadable into a `ParseError` whose message is
shown to the uploader as-is.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser

from django.utils.translation import gettext as _

TEXT_TYPES = ("md", "html", "txt", "csv")
EXTENSION_ALIASES = {"markdown": "md", "htm": "html", "text": "txt"}
# A DOCX is a zip; refuse to inflate one that would expand past this (zip bombs).
MAX_DOCX_UNCOMPRESSED_BYTES = 200 * 1024 * 1024

_BINARY_SIGNATURES = (
    b"\x89PNG",
    b"\xff\xd8\xff",
    b"GIF8",
    b"\x7fELF",
    b"MZ",
    b"\x1f\x8b",
    b"Rar!",
    b"7z\xbc\xaf",
    b"\xd0\xcf\x11\xe0",  # OLE: legacy .doc/.xls
)


class ParseError(Exception):
    """A file we cannot read; `str(exc)` is a sentence for the uploader."""


class FileTypeMismatch(Exception):
    """The content is plainly not what the extension claims."""


@dataclass(frozen=True, slots=True)
class Section:
    text: str
    page: int | None = None
    section: str = ""


def extension_of(filename: str) -> str:
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    return EXTENSION_ALIASES.get(ext, ext)


def sniff(head: bytes) -> str:
    """What the first bytes say: "pdf", "zip", "binary", "text" or "empty"."""
    if not head:
        return "empty"
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(_BINARY_SIGNATURES) or b"\x00" in head[:8192]:
        # UTF-16 text has NULs too, but nobody exports UTF-16 Markdown/CSV; treat it as binary.
        return "binary"
    return "text"


def check_content_matches(*, file_type: str, head: bytes) -> None:
    """Reject uploads whose first bytes contradict the extension; damaged files of the right
    kind pass and fail later in the worker with a precise reason."""
    kind = sniff(head)
    if kind == "empty":
        return
    if file_type == "pdf" and kind != "pdf" and not _looks_like_damaged_pdf(head):
        raise FileTypeMismatch(_("The file's content is not a PDF."))
    if file_type == "docx" and kind != "zip":
        raise FileTypeMismatch(_("The file's content is not a Word (.docx) document."))
    if file_type in TEXT_TYPES and kind != "text":
        raise FileTypeMismatch(_("The file's content is not text."))


def _looks_like_damaged_pdf(head: bytes) -> bool:
    # Some producers put a few bytes of junk before the header; pypdf copes with that.
    return b"%PDF-" in head[:1024]


def check_docx_archive(data: bytes) -> None:
    """A .docx must be a zip holding word/document.xml and must not inflate into a bomb."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            total = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile:
        raise ParseError(_("The Word document is damaged and cannot be opened.")) from None
    if "word/document.xml" not in names:
        raise ParseError(_("The file is a zip archive but not a Word (.docx) document."))
    if total > MAX_DOCX_UNCOMPRESSED_BYTES:
        raise ParseError(_("The Word document expands to more data than we accept."))


def parse_document(*, data: bytes, file_type: str) -> list[Section]:
    if not data.strip():
        raise ParseError(_("The file is empty."))
    parser = _PARSERS.get(file_type)
    if parser is None:
        raise ParseError(_("This file type is not supported."))
    sections = [s for s in parser(data) if s.text.strip()]
    if not sections:
        raise ParseError(_("No text could be found in this file."))
    return sections


def decode_text(data: bytes) -> str:
    """UTF-8 first (with or without BOM); then GB18030 (a superset of GBK/GB2312) when the
    result reads as Chinese; then charset-normalizer's best guess."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError:
        text = None
    if text is not None and _mostly_cjk(text):
        return text
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise ParseError(_("The text encoding of this file could not be recognised."))
    return str(best)


_CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")


def _mostly_cjk(text: str) -> bool:
    non_ascii = [c for c in text if ord(c) > 127]
    if not non_ascii:
        return True
    return sum(1 for c in non_ascii if _CJK.match(c)) / len(non_ascii) > 0.8


def _protected_message() -> str:
    return _("The PDF is password-protected; upload an unprotected copy.")


def _parse_pdf(data: bytes) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import (
        DependencyError,
        FileNotDecryptedError,
        PdfReadError,
        PdfStreamError,
    )

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # Owner-password-only PDFs open with an empty user password; others cannot be read.
            try:
                decrypted = reader.decrypt("")
            # AES needs the optional `cryptography` package; without it, or with a real user
            # password, the text is out of reach either way.
            except (FileNotDecryptedError, NotImplementedError, DependencyError):
                decrypted = 0
            if not decrypted:
                raise ParseError(_protected_message())
        sections = []
        for number, page in enumerate(reader.pages, start=1):
            sections.append(Section(text=page.extract_text() or "", page=number))
    except ParseError:
        raise
    except (FileNotDecryptedError, DependencyError):
        raise ParseError(_protected_message()) from None
    except (PdfReadError, PdfStreamError, ValueError, KeyError, TypeError, AttributeError,
            IndexError, OSError, RecursionError):  # fmt: skip
        # pypdf raises many types on malformed input; to the uploader they all mean "damaged".
        raise ParseError(_("The PDF file is damaged and cannot be read.")) from None
    if not any(s.text.strip() for s in sections):
        raise ParseError(
            _("No text could be extracted from this PDF; scanned pages (images) are not supported.")
        )
    return sections


def _parse_docx(data: bytes) -> list[Section]:
    check_docx_archive(data)
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile):
        raise ParseError(_("The Word document is damaged and cannot be opened.")) from None
    except Exception as exc:  # lxml raises its own XMLSyntaxError family on broken XML
        if type(exc).__module__.startswith("lxml"):
            from lxml import etree

            # Also how libxml2 reports an allocation refused by the worker's memory limit.
            if getattr(exc, "code", None) == etree.ErrorTypes.ERR_NO_MEMORY:
                raise MemoryError from None
            raise ParseError(_("The Word document is damaged and cannot be opened.")) from None
        raise
    sections: list[Section] = []
    heading = ""
    lines: list[str] = []

    def flush() -> None:
        if lines:
            sections.append(Section(text="\n".join(lines), section=heading[:255]))
            lines.clear()

    for paragraph in document.paragraphs:
        text = paragraph.text.strip()
        if not text:
            continue
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        if style.lower().startswith(("heading", "title")):
            flush()
            heading = text
        lines.append(text)
    flush()
    for table in document.tables:
        rows = [" | ".join(cell.text.strip() for cell in row.cells) for row in table.rows]
        sections.append(Section(text="\n".join(r for r in rows if r.strip(" |"))))
    return sections


def markdown_heading(line: str) -> str | None:
    r"""The title of an ATX heading (`## Title ##`), or None: one to six `#`, whitespace, the
    title, then optional closing `#`s and whitespace. One line, without its line break.

    String methods, in linear time. The pattern this replaces, `^#{1,6}\s+(.+?)\s*#*\s*$`,
    took cubic time on a heading whose title is split by a long run of spaces (1,600 spaces:
    6 s; 100,000: weeks); this returns exactly what its group 1 did, quirks included.
    `str.isspace()`, which `strip()` uses, is the same test as `\s` in a str pattern."""
    hashes = len(line) - len(line.lstrip("#"))
    if not 1 <= hashes <= 6:
        return None
    rest = line[hashes:]
    title = rest.lstrip()
    padding = len(rest) - len(title)
    if not padding:
        return None
    if not title:
        # Only whitespace after the `#`s: the lazy group took the last whitespace character.
        return rest[-1] if padding > 1 else None
    start = len(line) - len(title)
    # The shortest title (at least one character) after which only whitespace, `#`s and
    # whitespace remain.
    end = len(line.rstrip().rstrip("#").rstrip())
    return line[start : max(start + 1, end)]


def _parse_markdown(data: bytes) -> list[Section]:
    sections: list[Section] = []
    heading = ""
    lines: list[str] = []
    for line in decode_text(data).splitlines():
        title = markdown_heading(line)
        if title is not None:
            if lines:
                sections.append(Section(text="\n".join(lines), section=heading[:255]))
            heading, lines = title, []
        lines.append(line)
    if lines:
        sections.append(Section(text="\n".join(lines), section=heading[:255]))
    return sections


class _TextExtractor(HTMLParser):
    _SKIP = {"script", "style", "noscript", "template", "head", "svg"}
    _BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section",
              "article", "table", "ul", "ol", "pre", "blockquote", "title", "td", "th"}  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self._skipping:
            self.parts.append(data)


def _parse_html(data: bytes) -> list[Section]:
    extractor = _TextExtractor()
    extractor.feed(decode_text(data))
    extractor.close()
    text = "".join(extractor.parts)
    lines = (re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in text.splitlines())
    return [Section(text="\n".join(line for line in lines if line))]


def _parse_txt(data: bytes) -> list[Section]:
    return [Section(text=decode_text(data))]


def _parse_csv(data: bytes) -> list[Section]:
    """Each row becomes `header: value; …` so a chunk of rows still says what each value is."""
    text = decode_text(data)
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    try:
        rows = list(csv.reader(io.StringIO(text), dialect))
    except csv.Error:
        raise ParseError(_("The CSV file is malformed and cannot be read.")) from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        return []
    header, body = rows[0], rows[1:]
    if not body:
        return [Section(text=", ".join(header))]
    lines = []
    for row in body:
        cells = zip(header, row, strict=False)
        pairs = [f"{h.strip()}: {v.strip()}" for h, v in cells if v.strip()]
        lines.append("; ".join(pairs))
    return [Section(text="\n".join(lines))]


_PARSERS = {
    "pdf": _parse_pdf,
    "docx": _parse_docx,
    "md": _parse_markdown,
    "html": _parse_html,
    "txt": _parse_txt,
    "csv": _parse_csv,
}
