"""Reading fetched pages: HTML to Markdown without the boilerplate, PDF and plain text to text.

HTML goes through beautifulsoup4 (the standard library's parser) and markdownify:

1. decode with the charset of the header, a byte-order mark or ``<meta charset>`` (bs4's ``UnicodeDammit``);
2. drop what is never content: scripts, styles, forms' controls, ``nav``, ``aside``, ``footer``, page
   headers, hidden elements, ARIA landmarks for navigation, and elements whose class or id says
   sidebar, menu, cookie banner, share bar, comments... (Readability's list), unless they hold the
   article;
3. keep the one ``<main>`` or ``<article>`` when the page has one;
4. drop dense link blocks (more link text than other text: menus, tag clouds, "related" lists), as
   GLM-4's own browser does; if that leaves almost nothing the page was a link index, so keep them;
5. convert to Markdown: ATX headings, tables as pipe tables, code blocks fenced, emphasis dropped
   (tokens, no meaning), images as their alt text, links as references the browser numbers later.

markdownify was chosen over trafilatura by measuring (``benchmarks/browser_fetch.py --readers``, five
labelled pages with heavy boilerplate plus real pages): both kept all the key sentences and leaked
no boilerplate, but trafilatura dropped page titles and section headings (4 of 5 titles kept vs 5 of
5) and rewrites links so they cannot be numbered for ``mclick``; it is faster (about 2 vs 10 ms a
small page, 50-65 vs 80-90 ms a large one), a difference that fetch latency dwarfs, and it would add
lxml and nine other packages.

PDFs are read with pypdf (pure Python), page by page. Other content types are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from bs4 import BeautifulSoup, Comment, NavigableString, Tag
from bs4.dammit import UnicodeDammit
from markdownify import MarkdownConverter

from agent.confined import ConfinedError
from agent.documents import MAX_PDF_PAGES, read_pdf

from .errors import FetchError
from .fetch import FetchResult

# A link inside Document.text: LINK_START index LINK_MID text LINK_END. The browser turns it into
# 【id†text†host】 when the link is shown, so only links the model sees get an id.
LINK_START, LINK_MID, LINK_END = "\ue000", "\ue001", "\ue002"
LINK = re.compile(f"{LINK_START}(\\d+){LINK_MID}(.*?){LINK_END}", re.DOTALL)
_SENTINELS = {ord(LINK_START): None, ord(LINK_MID): None, ord(LINK_END): None}

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
        text = decode(result.body, result.charset, html=False).translate(_SENTINELS)
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


def decode(body: bytes, charset: str | None, *, html: bool) -> str:
    """Text from bytes: the header's charset, else a BOM or ``<meta charset>``, else a guess."""
    dammit = UnicodeDammit(body, known_definite_encodings=[charset] if charset else [], is_html=html)
    if dammit.unicode_markup is None:
        return body.decode("utf-8", errors="replace")
    return dammit.unicode_markup


# ---------------------------------------------------------------------------------------------------
# HTML

_DROP_TAGS = ["script", "style", "noscript", "template", "svg", "canvas", "iframe", "object", "embed",
              "button", "input", "select", "textarea", "nav", "aside", "footer", "dialog", "head", "menu"]
_DROP_ROLES = {"navigation", "banner", "contentinfo", "complementary", "search", "dialog", "alert", "menu", "menubar"}
# Readability's "unlikely candidates", and what rescues an element from them.
_UNLIKELY = re.compile(
    r"-ad-|ai2html|banner|breadcrumb|combx|comment|community|cookie|consent|cover-wrap|disqus|extra|"
    r"footer|gdpr|header|legends|menu|modal|newsletter|related|remark|replies|rss|share|shoutbox|"
    r"sidebar|skyscraper|social|sponsor|subscribe|supplemental|ad-break|agegate|pagination|pager|popup|promo|widget",
    re.IGNORECASE,
)
_MAYBE = re.compile(r"and|article|body|column|content|main|shadow", re.IGNORECASE)
_DENSE_LINK_TAGS = {"ul", "ol", "dl", "div", "section", "table", "p", "span"}
_KEEP_ALWAYS = {"html", "body", "main", "article", "table", "tbody", "thead", "tr", "td", "th", "pre", "code"}


def html_to_document(html: bytes | str, url: str, *, charset: str | None = None) -> Document:
    """Markdown of a page's content with its links collected; never raises on bad HTML."""
    text = decode(html, charset, html=True) if isinstance(html, bytes) else html
    soup = BeautifulSoup(text.translate(_SENTINELS), "html.parser")
    title = _title(soup)
    base = url
    base_tag = soup.find("base", href=True)
    if isinstance(base_tag, Tag):
        base = urljoin(url, str(base_tag["href"]))
    _drop_boilerplate(soup)
    root = _content_root(soup)
    _drop_dense_links(root)
    converter = _Converter(base)
    markdown = converter.convert_soup(root)
    return Document(url=url, title=title, text=_tidy(markdown), links=converter.links, kind="html")


def _title(soup: BeautifulSoup) -> str:
    for candidate in (soup.find("meta", property="og:title"), soup.title, soup.find("h1")):
        if isinstance(candidate, Tag):
            value = candidate.get("content") if candidate.name == "meta" else candidate.get_text(" ", strip=True)
            if value:
                return clean_inline(str(value))
    return ""


def _drop_boilerplate(soup: BeautifulSoup) -> None:
    # One walk that never descends into what it drops (an explicit stack: pages nest deeply).
    stack: list[tuple[Tag, bool]] = [(soup, False)]
    while stack:
        tag, in_article = stack.pop()
        for child in list(tag.children):
            if isinstance(child, Comment):
                child.extract()
            elif isinstance(child, Tag):
                if _is_boilerplate(child, in_article):
                    child.decompose()
                else:
                    stack.append((child, in_article or child.name in ("article", "main")))


def _is_boilerplate(tag: Tag, in_article: bool) -> bool:
    if tag.name in _DROP_TAGS:
        return True
    if tag.name == "header" and not in_article:  # the page's banner, not an article's heading
        return True
    return _hidden(tag) or _unlikely(tag)


def _hidden(tag: Tag) -> bool:
    style = str(tag.get("style", "")).replace(" ", "").lower()
    return (
        tag.has_attr("hidden")
        or str(tag.get("aria-hidden", "")).lower() == "true"
        or "display:none" in style
        or "visibility:hidden" in style
        or str(tag.get("role", "")).lower() in _DROP_ROLES
    )


def _unlikely(tag: Tag) -> bool:
    if tag.name in _KEEP_ALWAYS or tag.name == "a":
        return False
    names = " ".join([*(tag.get("class") or []), str(tag.get("id", ""))])
    return (
        bool(names.strip())
        and bool(_UNLIKELY.search(names))
        and not _MAYBE.search(names)
        and tag.find(["article", "main"]) is None
    )


def _content_root(soup: BeautifulSoup) -> Tag:
    body = soup.body or soup
    mains = soup.find_all("main") + soup.find_all(attrs={"role": "main"})  # type: ignore[call-overload]  # bs4 stubs
    for found in (mains, soup.find_all("article")):
        if len(found) == 1 and len(found[0].get_text(" ", strip=True)) >= 200:
            return found[0]
    return body


def _drop_dense_links(root: Tag) -> None:
    """Drop blocks with more link text than other text, innermost first, in one bottom-up pass.

    A block whose links went with an inner block is judged on what is left, so a menu inside an
    article goes and the article stays. If dropping would leave almost nothing, the page is an
    index of links, and they all stay.
    """
    order: list[Tag] = []
    stack = [root]
    while stack:
        tag = stack.pop()
        order.append(tag)
        stack.extend(child for child in tag.children if isinstance(child, Tag))
    kept: dict[int, tuple[int, int, int]] = {}  # id(tag) -> (text, link text, links) once drops are made
    everything: dict[int, int] = {}  # id(tag) -> text before any drop
    dropped: list[Tag] = []
    for tag in reversed(order):  # children before their parents
        text = full = link_text = links = 0
        for child in tag.children:
            if isinstance(child, Tag):
                child_text, child_link_text, child_links = kept[id(child)]
                text, link_text, links = text + child_text, link_text + child_link_text, links + child_links
                full += everything[id(child)]
            elif isinstance(child, NavigableString):
                size = len("".join(child.split()))
                text, full = text + size, full + size
        if tag.name == "a":
            link_text, links = text, links + 1
        everything[id(tag)] = full
        if tag is not root and tag.name in _DENSE_LINK_TAGS and links >= 2 and text and link_text / text > 0.5:
            dropped.append(tag)
            kept[id(tag)] = (0, 0, 0)
        else:
            kept[id(tag)] = (text, link_text, links)
    full_text, remaining = everything[id(root)], kept[id(root)][0]
    if remaining >= max(200, full_text // 5):
        for tag in dropped:
            tag.decompose()


class _Converter(MarkdownConverter):
    """markdownify with links collected as references and emphasis dropped."""

    def __init__(self, base_url: str):
        super().__init__(heading_style="ATX", bullets="-", strip=["b", "strong", "i", "em", "u"],
                         escape_asterisks=False, escape_underscores=False, escape_misc=False,
                         table_infer_header=True, autolinks=False)
        self.base_url = base_url
        self.links: list[str] = []
        self._index: dict[str, int] = {}

    def convert_a(self, el, text, parent_tags):
        text = clean_inline(text)
        href = str(el.get("href") or "").strip()
        if not text or not href or href.startswith(("#", "javascript:", "mailto:", "tel:", "data:")):
            return text
        target = urljoin(self.base_url, href).split("#", 1)[0]
        if urlsplit(target).scheme not in ("http", "https"):
            return text
        index = self._index.get(target)
        if index is None:
            index = self._index[target] = len(self.links)
            self.links.append(target)
        return f"{LINK_START}{index}{LINK_MID}{text}{LINK_END}"

    def convert_img(self, el, text, parent_tags):
        alt = clean_inline(str(el.get("alt") or ""))
        return f"[Image: {alt}]" if alt else ""


def clean_inline(text: str) -> str:
    """One line of text without the characters that delimit GLM-4 citations (【, †, 】)."""
    return " ".join(text.replace("【", "[").replace("】", "]").replace("†", "+").split())


def _tidy(markdown: str) -> str:
    lines = [line.rstrip() for line in markdown.splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


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
    return Document(url=url, title=title, text="\n\n".join(pages).translate(_SENTINELS), kind="pdf", notes=notes)
