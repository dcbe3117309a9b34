"""Reading fetched pages: HTML to Markdown without the boilerplate, PDF and plain text to text.

HTML is decoded here (:func:`decode`) and read by :mod:`tools.browser.extract` (lxml): the article
of the page as Markdown, with headings, lists, tables, code blocks and links numbered for ``mclick``.
PDFs are read with pypdf (pure Python), page by page. Other content types are refused.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from agent.confined import ConfinedError
from agent.documents import MAX_PDF_PAGES, read_pdf

from .errors import FetchError
from .extract import LINK, LINK_END, LINK_MID, LINK_START, SENTINELS, clean_inline, extract
from .fetch import FetchResult

__all__ = ["LINK", "LINK_END", "LINK_MID", "LINK_START", "Document", "clean_inline", "decode", "html_to_document",
           "is_readable", "read"]

HTML_TYPES = {"text/html", "application/xhtml+xml"}
PDF_TYPES = {"application/pdf", "application/x-pdf"}
TEXT_TYPES = {"text/plain", "text/markdown", "text/x-markdown", "text/csv", "application/json"}
SNIFF_TYPES = {"application/octet-stream", "binary/octet-stream"}  # often PDFs; decided by their bytes
PDF_DEADLINE_S = 30.0  # parsing one PDF, in a child process that is killed then


@dataclass
class Document:
    """A page as the browser shows it: Markdown (or text) with numbered-later links."""

    url: str
    title: str
    text: str
    links: list[str] = field(default_factory=list)  # absolute URLs, by the index used in `text`
    kind: str = "html"  # "html", "pdf" or "text"
    notes: list[str] = field(default_factory=list)  # e.g. that the body was cut at the size limit


def is_readable(media_type: str) -> bool:
    """Whether a body of this media type is worth downloading."""
    return media_type in HTML_TYPES | PDF_TYPES | TEXT_TYPES | SNIFF_TYPES


def read(result: FetchResult) -> Document:
    """The document in a fetched body; raises ``FetchError`` for content it cannot read."""
    kind = _kind(result.content_type, result.body)
    if kind == "html":
        doc = html_to_document(result.body, result.url, charset=result.charset)
    elif kind == "pdf":
        doc = pdf_to_document(result.body, result.url, truncated=result.truncated)
    elif kind == "text":
        text = decode(result.body, result.charset, html=False).translate(SENTINELS)
        doc = Document(url=result.url, title=urlsplit(result.url).path.rsplit("/", 1)[-1], text=text, kind="text")
    else:
        what = result.content_type or "of an unknown type"
        raise FetchError(f"{result.url} is {what}, which the browser cannot read (it reads HTML, text and PDF).")
    if result.truncated:
        doc.notes.append(f"The page was cut at {len(result.body):,} bytes (the policy's max_page_bytes).")
    return doc


def _kind(media_type: str, body: bytes) -> str | None:
    if media_type in HTML_TYPES:
        return "html"
    if media_type in PDF_TYPES:
        return "pdf"
    if media_type in TEXT_TYPES:
        return "text"
    if media_type and media_type not in SNIFF_TYPES:
        return None
    head = body[:1024].lstrip().lower()
    if head.startswith(b"%pdf-"):
        return "pdf"
    if head.startswith((b"<!doctype html", b"<html")) or b"<body" in head:
        return "html"
    if not media_type and b"\x00" not in head:
        return "text"
    return None


# ---------------------------------------------------------------------------------------------------
# Decoding

_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
# Labels browsers read as another (larger) encoding, after the WHATWG Encoding Standard.
_LABELS = {
    **dict.fromkeys(["ascii", "us-ascii", "latin1", "latin-1", "iso-8859-1", "iso8859-1", "iso_8859-1", "l1",
                     "cp819", "ibm819", "x-user-defined"], "cp1252"),
    **dict.fromkeys(["iso-8859-9", "iso8859-9", "latin5", "l5"], "cp1254"),
    **dict.fromkeys(["tis-620", "iso-8859-11", "windows-874", "dos-874"], "cp874"),
    **dict.fromkeys(["gb2312", "gbk", "gb_2312-80", "x-gbk", "chinese", "csgb2312", "iso-ir-58"], "gb18030"),
    **dict.fromkeys(["shift_jis", "shift-jis", "sjis", "x-sjis", "windows-31j", "ms_kanji", "ms932", "csshiftjis"],
                    "cp932"),
    **dict.fromkeys(["euc-kr", "ks_c_5601-1987", "korean", "windows-949", "csksc56011987"], "cp949"),
    **dict.fromkeys(["big5", "x-x-big5", "cn-big5", "csbig5"], "big5hkscs"),
    **dict.fromkeys(["utf8", "unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8", "x-unicode20utf8"], "utf-8"),
    "iso-8859-8-i": "iso-8859-8", "x-mac-cyrillic": "mac-cyrillic",
}
_META_CHARSET = re.compile(rb"""<meta[^>]{0,500}?charset\s*=\s*["']?\s*([a-z0-9_.:-]{1,40})""", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""^<\?xml[^>]{0,200}?encoding\s*=\s*["']([a-z0-9_.:-]{1,40})""", re.IGNORECASE)
_DETECT_BYTES = 1 << 18  # what charset detection looks at: enough to decide, bounded in time
_SINGLE_BYTE = {name for name in (codecs.lookup(label).name for label in (
    *[f"cp{n}" for n in (437, 850, 852, 855, 857, 858, 860, 861, 862, 863, 865, 866, 869, 874, 1006, 1125, 1250, 1251,
                         1252, 1253, 1254, 1255, 1256, 1257, 1258)],
    *[f"iso8859-{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 15, 16)],
    "koi8-r", "koi8-u", "mac-roman", "mac-cyrillic", "mac-greek", "mac-latin2", "hp-roman8", "tis-620", "ptcp154",
    "kz1048"))}


def decode(body: bytes, charset: str | None, *, html: bool) -> str:
    """Text from bytes as a browser decodes them; never raises.

    The order is the WHATWG one: a byte-order mark, then the HTTP header's ``charset``, then (HTML)
    ``<meta charset>`` or ``http-equiv`` in the first 16 KB. Without any, UTF-8 when the bytes are
    UTF-8, also with a few bad bytes (a page cut mid-character, a stray Latin-1 byte): as long as
    fewer characters are bad than decode, UTF-8 garbles less than any single-byte guess would.
    UTF-16 without a BOM is told by its zero bytes.
    Otherwise charset-normalizer guesses (Shift-JIS, GBK, Windows-1252...); Windows-1252 is the last resort.
    """
    for bom, name in _BOMS:
        if body.startswith(bom):
            return body[len(bom):].decode(name, errors="replace")
    declared = encoding_name(charset) if charset else None
    if declared is None and html:
        found = _META_CHARSET.search(body[:16384]) or _XML_ENCODING.search(body[:1024])
        declared = encoding_name(found.group(1).decode("ascii"), meta=True) if found else None
    if declared is not None:
        return body.decode(declared, errors="replace")
    return _undeclared(body)


def encoding_name(label: str, *, meta: bool = False) -> str | None:
    """The Python codec for a charset label, as browsers map labels; ``None`` for an unknown one."""
    label = label.strip().strip("\"'").lower()
    if meta and label.startswith("utf-16"):  # a page that could say so in ASCII is not UTF-16
        return "utf-8"
    label = _LABELS.get(label, label)
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def _undeclared(body: bytes) -> str:
    head = body[:4096]
    if head.count(0) > len(head) // 4:  # UTF-16 without a BOM: every other byte of ASCII text is zero
        return body.decode("utf-16-le" if head[1::2].count(0) > head[::2].count(0) else "utf-16-be", errors="replace")
    text = body.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - body.count(b"\xef\xbf\xbd")  # U+FFFD the page itself wrote is not an error
    if bad == 0:
        return text
    good = len(text) - len(text.encode("ascii", errors="ignore")) - bad  # characters UTF-8 decoded
    if bad <= good:  # UTF-8 with a few bad bytes: the decoding that garbles fewer characters
        return text
    return body.decode(_detect(body[:_DETECT_BYTES]), errors="replace")


_ACCENTED_WORD = re.compile(rb"[A-Za-z\x80-\xff]*[\x80-\xff][A-Za-z\x80-\xff]*")
_CENTRAL_EUROPEAN = {"cp1250", "iso8859_2"}


def _detect(sample: bytes) -> str:
    """charset-normalizer's guess, leaning to Windows-1252 (the fallback of browsers) for Latin-script text.

    Western accents in mostly-ASCII words (café, Straße) look alike in every Latin code page, where
    charset-normalizer's guesses tie or go astray (``Café`` comes back as Urdu); its guess is kept
    for other scripts (Cyrillic, Greek, CJK: words of high bytes) and for Central European text
    that it tells apart from Windows-1252.
    """
    from charset_normalizer import from_bytes

    matches = list(from_bytes(sample))
    if not matches:
        return "cp1252"
    best = matches[0]
    words = _ACCENTED_WORD.findall(sample)
    letters = sum(len(word) for word in words)
    high = sum(len(word) - len(word.translate(None, bytes(range(0x80, 0x100)))) for word in words)
    if not letters or high >= letters / 2 or best.encoding not in _SINGLE_BYTE:
        return best.encoding
    tied = {m.encoding for m in matches if m.chaos <= best.chaos + 0.01 and m.coherence >= best.coherence - 0.01}
    return best.encoding if best.encoding in _CENTRAL_EUROPEAN and "cp1252" not in tied else "cp1252"


# ---------------------------------------------------------------------------------------------------
# HTML


_GARBAGE = re.compile("[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f]")


def html_to_document(html: bytes | str, url: str, *, charset: str | None = None) -> Document:
    """The article of a page as Markdown with its links collected; never raises, whatever the bytes."""
    text = decode(html, charset, html=True) if isinstance(html, bytes) else html
    sample = text[:65536]
    if len(_GARBAGE.findall(sample)) > len(sample) // 20:  # binary data sent as HTML: nothing to read
        return Document(url=url, title="", text="", kind="html",
                        notes=["The page is not text: many of its bytes decode to nothing (binary data sent as HTML)."])
    page = extract(text, url)
    return Document(url=url, title=page.title, text=page.markdown, links=page.links, kind="html", notes=page.notes)


# ---------------------------------------------------------------------------------------------------
# PDF


def pdf_to_document(data: bytes, url: str, *, truncated: bool = False) -> Document:
    """The text of a PDF, page by page, with pypdf, parsed in a child process under a deadline and limits."""
    if truncated:
        raise FetchError(f"{url} is a PDF larger than the policy's max_page_bytes ({len(data):,} bytes), so it cannot be read.")
    try:
        pdf = read_pdf(data, timeout_s=PDF_DEADLINE_S)
    except ConfinedError as exc:
        raise FetchError(f"{url} is not a readable PDF ({exc}).") from None
    if pdf["encrypted"]:
        raise FetchError(f"{url} is an encrypted PDF; it cannot be read without its password.")
    pages = [f"--- Page {number} ---\n{text.strip()}" for number, text in enumerate(pdf["pages"], start=1)]
    count = pdf["count"]
    notes = [f"Only the first {MAX_PDF_PAGES} of {count} pages were read."] if count > MAX_PDF_PAGES else []
    title = clean_inline(pdf["title"]) or urlsplit(url).path.rsplit("/", 1)[-1]
    return Document(url=url, title=title, text="\n\n".join(pages).translate(SENTINELS), kind="pdf", notes=notes)
