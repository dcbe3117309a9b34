"""The article of an HTML page as Markdown, with its links kept for ``mclick``.

How a page is read (lxml's HTML parser, then plain Python over the tree):

1. parse; markup nested deeper than libxml2's 256 levels is read again with its inline formatting
   (then all nesting tags) taken out, so the text past that depth is not lost;
2. drop what is never content: scripts, styles, forms' controls, ``nav``, ``aside``, ``footer``,
   ``header``, images, hidden elements, ARIA landmarks for navigation;
3. find the article the way Readability does: paragraphs score their parent and ancestors (length,
   commas, few links, class names that say content or boilerplate), the best candidate wins, and its
   siblings join when they score well or are paragraphs of text themselves. Elements whose class or
   id says sidebar, comments, menu... are left out first; when that leaves under 500 characters the
   search runs again without that filter, then without class names at all (Readability's fallback),
   so a post wrapped in ``widget`` or ``PageBuilder-pageRow`` is not lost;
4. inside the article, drop what readers skip: blocks that are mostly links (menus, tag lists,
   related-article lists; kept when they are most of the page, an index), elements whose class names
   say share bar, newsletter box, byline, caption, "related" (a quoted social post stays), figures,
   the headline (it becomes the document's title), copyright lines, and stray short lines at the
   article's edges (dates, "Advertisement");
5. write Markdown: ATX headings, lists, tables as pipe tables (layout tables as text), code fenced,
   quotes, emphasis dropped, links as references the browser numbers when they are shown, with the
   page's own spacing around them.

Measured on the ScrapingHub article-extraction benchmark (``benchmarks/reader_quality.py``) against
trafilatura and readability-lxml; the figures are in the README. No page makes :func:`extract` raise,
and every step is bounded: recursion stops at ``MAX_RENDER_DEPTH`` (the parser caps depth at 256), and
each pass is linear in the page (tables in tables: times their nesting).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import lxml.etree
import lxml.html
from lxml.html import HtmlElement

# A link inside the Markdown: LINK_START index LINK_MID text LINK_END. The browser turns it into
# 【id†text†host】 when the link is shown, so only links the model sees get an id.
LINK_START, LINK_MID, LINK_END = "\ue000", "\ue001", "\ue002"
LINK = re.compile(f"{LINK_START}(\\d+){LINK_MID}(.*?){LINK_END}", re.DOTALL)
_BREAK = "\ue003"  # a <br> until its paragraph is written
SENTINELS = {ord(c): None for c in (LINK_START, LINK_MID, LINK_END, _BREAK)}  # taken out of every page first
# Control characters: libxml2 reads them but lxml refuses to write them back into a tree.
_UNWANTED = {**SENTINELS, **{code: " " for code in [*range(0x01, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]}, 0: None}

MIN_ARTICLE_CHARS = 500  # less than this after the class-name filter: search again without it (Readability's figure)
MAX_RENDER_DEPTH = 150  # below this depth an element is written as plain text (the parser stops at 256)
MAX_NESTING = 8  # lists and quotes nested deeper are written flat

DROP_TAGS = frozenset({
    "script", "style", "noscript", "template", "svg", "math", "canvas", "iframe", "object", "embed", "button",
    "input", "select", "textarea", "option", "nav", "aside", "footer", "dialog", "head", "menu", "link", "meta",
    "video", "audio", "source", "track", "picture", "map", "area", "label", "img", "title", "base",
})
DROP_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary", "search", "dialog", "alert",
                        "alertdialog", "menu", "menubar", "tablist", "toolbar"})
BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "body", "caption", "center", "dd", "details", "dialog", "dir",
    "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
    "header", "hgroup", "hr", "html", "li", "main", "menu", "nav", "ol", "p", "pre", "section", "summary",
    "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
})
HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
TAG_BONUS = {"div": 5, "article": 8, "main": 5, "section": 2, "pre": 3, "td": 3, "blockquote": 3,
             "address": -3, "ol": -3, "ul": -3, "dl": -3, "dd": -3, "dt": -3, "li": -3, "form": -3,
             "h1": -5, "h2": -5, "h3": -5, "h4": -5, "h5": -5, "h6": -5, "th": -5}

# Class and id names, split into words ("relatedPosts" -> "related-posts") and matched at a word's start.
_CAMEL = re.compile(r"([a-z])([A-Z])")
UNLIKELY = re.compile(
    r"(?<![a-z])(?:ad-break|agegate|banner|breadcrumb|combx|comment|community|cookie|consent|cover-wrap|disqus|"
    r"extra|footer|gdpr|header|legends|menu|modal|newsletter|related|remark|replies|rss|share|shoutbox|sidebar|"
    r"skyscraper|social|sponsor|subscribe|supplemental|pagination|popup|promo|outbrain|taboola)")
MAYBE = re.compile(r"(?<![a-z])(?:and|article|body|column|content|main|shadow|story|post|entry|embed)")
POSITIVE = re.compile(r"(?<![a-z])(?:article|body|content|entry|hentry|h-entry|main|page|post|text|blog|story)")
NEGATIVE = re.compile(
    r"(?<![a-z])(?:hidden|banner|combx|comment|com-|contact|footer|footnote|masthead|media|meta|outbrain|promo|"
    r"related|scroll|share|shoutbox|sidebar|skyscraper|sponsor|shopping|tags|widget|ad|ads|advert)(?![a-z])")
# Inside the article: what readers skip.
BOILERPLATE = re.compile(
    r"(?<![a-z])(?:share|sharing|social|related|newsletter|subscribe|signup|sign-up|promo|advert|ad|ads|adslot|"
    r"byline|author|caption|credit|breadcrumb|tags|tag-list|toolbar|comments?|disqus|print|recirc|"
    r"more-stories|read-more|readmore|also|trending|popular|sponsored|outbrain|taboola|footer|meta|timestamp|"
    r"date|published|dateline|figcaption|wp-caption-text|pagination|pager|nav|dek|standfirst|subtitle|subhead|"
    r"strapline|kicker|cta|copyright)(?![a-z])")
_COPYRIGHT = re.compile(r"^(?:©|\(c\)|copyright\b)|all rights reserved", re.IGNORECASE)  # a page's legal line
# A post quoted from a social network is content, whatever else its class says (but not an image's caption).
_EMBED = re.compile(r"^(?!.*(?:caption|image|img|photo|video|credit)).*(?<![a-z])(?:embed|tweet)", re.DOTALL)
LINK_LISTS = frozenset({"ul", "ol", "div", "section", "table", "dl", "p"})
_SENTENCE_END = re.compile(r"""[.!?:;。！？：；][)\]"'”’»」]*(\s|$)""")  # also before a closing quote or bracket


@dataclass
class Extracted:
    """What :func:`extract` found: the title, the article as Markdown, its links by index, notes."""

    title: str
    markdown: str
    links: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def extract(html: str, url: str) -> Extracted:
    """The article of a page; never raises (broken markup, bad URLs, binary bytes, deep nesting)."""
    html = html.translate(_UNWANTED)
    try:
        return _read(html, url)
    except Exception as exc:  # noqa: BLE001 - a page must never break the browser; say what happened instead
        return Extracted(title="", markdown=_plain_text(html),
                         notes=[f"The page could not be read as HTML ({type(exc).__name__}); shown as plain text."])


def clean_inline(text: str) -> str:
    """One line of text without the characters that delimit GLM-4 citations (【, †, 】)."""
    return " ".join(text.replace("【", "[").replace("】", "]").replace("†", "+").split())


def _plain_text(html: str) -> str:
    text = re.sub(r"<(script|style)\b.*?</\1\s*>|<[^>]{0,2000}>", " ", html[:2_000_000], flags=re.I | re.S)
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


# ---------------------------------------------------------------------------------------------------
# Parsing


_INLINE_TAGS = re.compile(
    r"</?(?:font|span|b|i|u|em|strong|small|big|sup|sub|s|strike|tt|mark|abbr|cite|q|del|ins|a)\b[^>]*>", re.I)
_NESTING_TAGS = re.compile(r"<(?!/?(?:p|br|h[1-6]|pre|li)\b)/?[a-z][^>]*>", re.I)


def parse(html: str) -> tuple[HtmlElement | None, list[str]]:
    """The document element, and notes on what parsing had to give up."""
    root, too_deep = _parse(html)
    if not too_deep:
        return root, []
    for strip in (_INLINE_TAGS, _NESTING_TAGS):  # libxml2 stops at 256 levels: flatten and read it again
        root, too_deep = _parse(strip.sub(" ", html))
        if not too_deep:
            break
    return root, ["The page nests its markup more than 255 levels deep; it was read with its formatting flattened."]


def _parse(html: str) -> tuple[HtmlElement | None, bool]:
    parser = lxml.html.HTMLParser(remove_comments=True, remove_pis=True, no_network=True, encoding="utf-8",
                                  default_doctype=False, collect_ids=False)
    try:
        root = lxml.html.document_fromstring(html.encode("utf-8", errors="replace"), parser=parser)
    except (lxml.etree.ParserError, ValueError):  # "Document is empty"
        return None, False
    too_deep = any(entry.type_name == "ERR_RESOURCE_LIMIT" for entry in parser.error_log)
    return root, too_deep


def class_words(el: HtmlElement) -> str:
    names = f"{el.get('class') or ''} {el.get('id') or ''}"
    return _CAMEL.sub(r"\1-\2", names).lower() if len(names) > 1 else ""


def _nws(text: str | None) -> int:
    """Characters that are not white space."""
    if not text:
        return 0
    return len(text) - text.count(" ") - text.count("\n") - text.count("\t") - text.count("\r") - text.count("\xa0")


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text.lower())


def _like_title(text: str, title_words: set[str]) -> bool:
    """Most of ``text`` (by characters of its words) is words of the title."""
    words = _words(text)
    size = sum(len(w) for w in words)
    return size > 0 and sum(len(w) for w in words if w in title_words) >= 0.6 * size


def _drop(el: HtmlElement) -> None:
    """Remove an element but keep the text that follows it."""
    parent = el.getparent()
    if parent is None:
        return
    if el.tail:
        previous = el.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + el.tail
        else:
            parent.text = (parent.text or "") + el.tail
    parent.remove(el)


# ---------------------------------------------------------------------------------------------------
# Finding the article


@dataclass(slots=True)
class Stats:
    """What an element holds, counted in characters that are not white space."""

    chars: int = 0
    links: int = 0  # inside <a>
    inline: int = 0  # not inside a block-level descendant
    commas: int = 0
    has_block: bool = False
    good: int = 0  # in paragraphs with few links
    anchors: int = 0  # <a> elements

    @property
    def link_density(self) -> float:
        return self.links / self.chars if self.chars else 0.0


def _read(html: str, url: str) -> Extracted:
    root, notes = parse(html)
    if root is None:
        return Extracted(title="", markdown="", notes=notes)
    title, title_words = _titles(root)
    links = _Links(_base_url(root, url))
    body = root.find("body")
    if body is None:
        body = root
    _clean(body)
    content, stats = _find_article(body)
    writer = Writer(links)
    for el in _drop_boilerplate(content, stats, title_words):
        writer.render(el, 0, 0)
    writer.flush()
    blocks = _trim([block for block in writer.blocks if len(block) > 300 or not _COPYRIGHT.search(block)])
    if blocks and blocks[0].startswith("# "):  # the article's own headline: it is the title
        headline = LINK.sub(lambda m: m.group(2), blocks.pop(0)[2:])
        if not _like_title(title, set(_words(headline))):
            title = headline
    return Extracted(title=clean_inline(title), markdown="\n\n".join(blocks), links=links.urls, notes=notes)


def _stray(block: str) -> bool:
    """A short line that is not a sentence, heading, list or table: a date, a byline, "Advertisement"."""
    text = LINK.sub(lambda m: m.group(2), block)
    return len(text) < 80 and not text.startswith(("#", "|", "- ", "```", ">")) and not _SENTENCE_END.search(text)


def _trim(blocks: list[str]) -> list[str]:
    """The blocks without the stray lines at the article's edges (unless that is all there is)."""
    start, end = 0, len(blocks)
    while start < end and _stray(blocks[start]):
        start += 1
    while end > start and _stray(blocks[end - 1]):
        end -= 1
    return blocks[start:end] if end > start else blocks


def _titles(root: HtmlElement) -> tuple[str, set[str]]:
    """The page's headline (its h1 when that matches ``og:title`` or ``<title>``) and the words of its titles."""
    meta = ""
    for xpath in ('//meta[@property="og:title"]/@content', "//title//text()"):
        meta = " ".join(" ".join(str(v) for v in root.xpath(xpath)).split())
        if meta:
            break
    words = set(_words(meta))
    for h1 in root.iter("h1"):
        text = " ".join(h1.text_content().split())
        if text and (not words or _like_title(text, words)):
            return text, words | set(_words(text))
    return meta, words


def _base_url(root: HtmlElement, url: str) -> str:
    for href in root.xpath("//base/@href")[:1]:
        try:
            return urljoin(url, str(href).strip())
        except ValueError:  # https://[YOUR-DOMAIN]/api
            break
    return url


_MAYBE_HIDDEN = lxml.etree.XPath("descendant::*[@hidden or @aria-hidden or @style or @role]")


def _hidden(el: HtmlElement) -> bool:
    if el.get("hidden") is not None or el.get("aria-hidden") == "true":
        return True
    style = el.get("style")
    if style:
        style = style.replace(" ", "").lower()
        if "display:none" in style or "visibility:hidden" in style:
            return True
    role = el.get("role")
    return role is not None and role.lower() in DROP_ROLES


def _clean(body: HtmlElement) -> None:
    """Drop what is never content: scripts, styles, controls, navigation, page headers, hidden elements."""
    # libxml2 finds the candidates (a Python walk over every element costs several times more on large pages)
    for el in [*body.iter(*DROP_TAGS, "header"), *(el for el in _MAYBE_HIDDEN(body) if _hidden(el))]:
        _drop(el)


_NAMED = lxml.etree.XPath("descendant::*[@class or @id]")


def _unlikely(body: HtmlElement) -> set[HtmlElement]:
    """Elements whose class or id says they are not the article (sidebars, comments, menus...)."""
    found = set()
    for el in _NAMED(body):
        if el.tag in ("a", "article", "main", "table", "tbody", "tr", "td", "th", "pre", "code"):
            continue
        words = class_words(el)
        if words and UNLIKELY.search(words) and not MAYBE.search(words):
            found.add(el)
    return found


def _find_article(body: HtmlElement) -> tuple[list[HtmlElement], dict[HtmlElement, Stats]]:
    """The elements of the article, by Readability's search with its fallbacks, and their statistics."""
    unlikely = _unlikely(body)
    filtered = _stats(body, unlikely) if unlikely else None
    full: dict[HtmlElement, Stats] | None = None
    best: tuple[int, list[HtmlElement], dict[HtmlElement, Stats], set[HtmlElement]] | None = None
    for use_filter, weigh_classes in ((True, True), (False, True), (False, False)):
        if use_filter:
            if filtered is None:
                continue  # nothing to leave out: the next search is this one
            stats, skip = filtered, unlikely
        else:
            full = full or _stats(body, set())
            stats, skip = full, set()
        content = _pick(body, stats, _scores(stats, weigh_classes))
        size = sum(stats[el].chars - stats[el].links for el in content)
        if best is None or size > best[0]:
            best = (size, content, stats, skip)
        if size >= MIN_ARTICLE_CHARS:
            break
    assert best is not None
    _, content, stats, skip = best
    for el in skip:
        if el.getparent() in stats:  # (one inside another left out goes with it)
            _drop(el)
    return content, stats


def _stats(body: HtmlElement, skip: set[HtmlElement]) -> dict[HtmlElement, Stats]:
    order = []
    stack = [body]
    while stack:
        el = stack.pop()
        order.append(el)
        stack.extend(child for child in el if child not in skip)
    stats: dict[HtmlElement, Stats] = {}
    for el in reversed(order):  # children before their parents
        stats[el] = _count(el, stats)
    return stats


def _count(el: HtmlElement, stats: dict[HtmlElement, Stats]) -> Stats:
    text = el.text or ""
    own = _nws(text)
    commas = text.count(",") + text.count("，")
    total = links = inline = good = anchors = 0
    has_block = False
    for child in el:
        tail = child.tail
        if tail:
            own += _nws(tail)
            commas += tail.count(",") + tail.count("，")
        counted = stats.get(child)
        if counted is None:
            continue
        total += counted.chars
        links += counted.links
        commas += counted.commas
        good += counted.good
        anchors += counted.anchors
        if child.tag in BLOCK_TAGS:
            has_block = True
        else:
            inline += counted.inline
    total += own
    inline += own
    tag = el.tag
    if tag == "a":
        links = total
        anchors += 1
    if tag in BLOCK_TAGS and tag not in HEADINGS:
        if not has_block and total >= 25 and links < 0.25 * total:
            good = total
        elif has_block and inline >= 25:
            good += inline
    return Stats(total, links, inline, commas, has_block, good, anchors)


def _class_weight(el: HtmlElement) -> float:
    words = class_words(el)
    if not words:
        return 0.0
    return (25.0 if POSITIVE.search(words) else 0.0) - (25.0 if NEGATIVE.search(words) else 0.0)


def _scores(stats: dict[HtmlElement, Stats], weigh_classes: bool) -> dict[HtmlElement, float]:
    """Readability's scores: each paragraph gives its parent its score, its grandparent half, and so on."""
    scores: dict[HtmlElement, float] = {}
    for el, counted in stats.items():
        if el.tag not in BLOCK_TAGS or el.tag in HEADINGS:
            continue
        if not counted.has_block:  # a paragraph (or a div of text, as good as one)
            chars, node = counted.chars, el.getparent()
        elif counted.inline >= 25:  # text beside blocks: a paragraph inside this element
            chars, node = counted.inline, el
        else:
            continue
        if chars < 25:
            continue
        value = 1 + counted.commas + min(chars / 100, 3)
        for level in range(5):
            if node is None or node not in stats:
                break
            if node not in scores:
                scores[node] = TAG_BONUS.get(node.tag, 0) + (_class_weight(node) if weigh_classes else 0.0)
            scores[node] += value if level == 0 else value / 2 if level == 1 else value / (level * 3)
            node = node.getparent()
    for el in scores:
        scores[el] *= 1 - stats[el].link_density
    return scores


def _pick(body: HtmlElement, stats: dict[HtmlElement, Stats], scores: dict[HtmlElement, float]) -> list[HtmlElement]:
    """The best candidate, moved up where the article spreads wider, with the siblings that belong to it."""
    if not scores:
        return [body]
    inner = [el for el in scores if el.tag not in ("body", "html")]  # the page itself only when nothing else
    top = max(inner or scores, key=scores.__getitem__)
    top = _widen(top, scores)
    parent = top.getparent()
    if parent is None or top is body:
        return [top]
    top_score = scores.get(top, 0.0)
    threshold = max(10.0, top_score * 0.2)
    top_class = top.get("class")
    content = []
    for sibling in parent:
        counted = stats.get(sibling)
        if sibling is top:
            content.append(sibling)
        elif counted is None or not isinstance(sibling.tag, str):
            continue
        elif sibling in scores:
            bonus = top_score * 0.2 if top_class and sibling.get("class") == top_class else 0.0
            if scores[sibling] + bonus >= threshold:
                content.append(sibling)
        elif _is_text(sibling, counted):
            content.append(sibling)
    return content


def _widen(top: HtmlElement, scores: dict[HtmlElement, float]) -> HtmlElement:
    top_score = scores[top]
    # Several other good candidates under one ancestor (not nested in each other): the article is there.
    lineage = list(top.iterancestors())
    ancestors = set(lineage)
    ranked = [el for el in sorted(scores, key=scores.__getitem__, reverse=True)[:6] if el is not top][:5]
    others = [el for el in ranked
              if scores[el] >= 0.75 * top_score and el not in ancestors and top not in set(el.iterancestors())]
    if len(others) >= 3:
        for ancestor in lineage:
            if ancestor.tag in ("body", "html"):
                break
            if sum(1 for el in others if ancestor in set(el.iterancestors())) >= 3:
                top = ancestor
                break
    # Climb while the parent scores about as well (the article is split into several containers).
    last = scores.get(top, 0.0)
    floor = last / 3
    parent = top.getparent()
    while parent is not None and parent.tag not in ("body", "html"):
        parent_score = scores.get(parent)
        if parent_score is not None:
            if parent_score < floor:
                break
            if parent_score > last:
                top = parent
                break
            last = parent_score
        parent = parent.getparent()
    while (parent := top.getparent()) is not None and parent.tag not in ("body", "html") and len(parent) == 1:
        top = parent
    return top


def _is_text(el: HtmlElement, counted: Stats) -> bool:
    """A sibling that is a paragraph of text (or a wrapper of some): it belongs to the article."""
    if el.tag in HEADINGS or (counted.has_block and counted.good < 0.7 * counted.chars):
        return False
    density = counted.link_density
    if counted.chars > 80:
        return density < 0.25
    return counted.chars > 0 and density == 0 and bool(_SENTENCE_END.search(el.text_content()))


# ---------------------------------------------------------------------------------------------------
# Inside the article


def _drop_boilerplate(content: list[HtmlElement], stats: dict[HtmlElement, Stats],
                      title_words: set[str]) -> list[HtmlElement]:
    """Drop elements whose class names say boilerplate, the headline, and link lists.

    Link lists go only when enough is left without them (GLM-4's own browser drops them too): a page
    that is mostly links is an index, and its links are what it is for.
    """
    total = sum(stats[top].chars for top in content)
    skipped: list[HtmlElement] = []
    link_lists: list[HtmlElement] = []
    for top in content:
        stack = [top]
        while stack:
            el = stack.pop()
            counted = stats.get(el)
            if counted is None:
                continue
            whole = el is top and len(content) == 1  # the article itself
            if not whole and _skipped(el, counted, title_words, total):
                skipped.append(el)
            elif not whole and el.tag in LINK_LISTS and _links_mostly(counted):
                link_lists.append(el)
            else:
                stack.extend(el)
    left = total - sum(stats[el].chars for el in skipped + link_lists)
    drops = skipped + link_lists if left >= min(200, total // 5) else skipped
    dropped = set(drops)
    for el in drops:
        _drop(el)
    return [top for top in content if top not in dropped]


def _links_mostly(counted: Stats) -> bool:
    """Mostly link text: several links over half of it (a menu, a list of stories), or one over most of it."""
    return counted.links >= (0.5 if counted.anchors >= 2 else 0.7) * counted.chars > 0


def _skipped(el: HtmlElement, counted: Stats, title_words: set[str], total: int) -> bool:
    tag = el.tag
    if tag in ("figure", "figcaption"):
        return True
    if tag in ("h1", "h2"):
        return bool(title_words) and _like_title(el.text_content(), title_words)
    words = class_words(el)
    return (bool(words) and BOILERPLATE.search(words) is not None and counted.chars < 0.5 * total
            and _EMBED.search(words) is None)


# ---------------------------------------------------------------------------------------------------
# Markdown


_SKIP_LINKS = ("#", "javascript:", "mailto:", "tel:", "data:")


class Writer:
    """Markdown blocks from elements; links become references numbered by a page's :class:`_Links`.

    Recursion follows the tree, which the parser caps at 256 levels; past ``MAX_RENDER_DEPTH`` an
    element is written as its plain text.
    """

    def __init__(self, links: _Links):
        self._links = links
        self.blocks: list[str] = []
        self._parts: list[str] = []

    def _sub(self) -> Writer:
        return Writer(self._links)

    def flush(self) -> None:
        if self._parts:
            lines = (" ".join(line.split()) for line in "".join(self._parts).split(_BREAK))
            self._parts = []
            text = "\n".join(line for line in lines if line)
            if text:
                self.blocks.append(text)

    def _text(self, value: str | None) -> None:
        if value:
            self._parts.append(value)

    def render_children(self, el: HtmlElement, depth: int, nesting: int) -> None:
        self._text(el.text)
        for child in el:
            self.render(child, depth + 1, nesting)
            self._text(child.tail)

    def render(self, el: HtmlElement, depth: int, nesting: int) -> None:
        tag = el.tag
        if not isinstance(tag, str):
            return
        if depth > MAX_RENDER_DEPTH:
            self._text(" " + " ".join(el.itertext()) + " ")
        elif tag == "br":
            self._parts.append(_BREAK)
        elif tag == "a":
            self._link(el, depth, nesting)
        elif tag == "code":
            code = " ".join("".join(el.itertext()).split())
            if code:
                self._parts.append(f"`{code}`")
        elif tag in HEADINGS or tag == "pre" or tag in ("ul", "ol", "dir", "table", "blockquote"):
            self.flush()
            self._block(el, depth, nesting)
        elif tag in BLOCK_TAGS:
            self.flush()
            self.render_children(el, depth, nesting)
            self.flush()
        else:
            self.render_children(el, depth, nesting)

    def _block(self, el: HtmlElement, depth: int, nesting: int) -> None:
        tag = el.tag
        if tag in HEADINGS:
            text = self._inline(el, depth, nesting)
            if text:
                self.blocks.append("#" * int(tag[1]) + " " + text)
        elif tag == "pre":
            code = el.text_content().strip("\n")
            if code.strip():
                fence = "~~~" if "```" in code else "```"
                self.blocks.append(f"{fence}\n{code}\n{fence}")
        elif nesting >= MAX_NESTING:
            self.render_children(el, depth, nesting)
            self.flush()
        elif tag == "table":
            self._table(el, depth, nesting + 1)
        elif tag == "blockquote":
            inner = self._sub()
            inner.render_children(el, depth, nesting + 1)
            inner.flush()
            if inner.blocks:
                lines = "\n\n".join(inner.blocks).split("\n")
                self.blocks.append("\n".join(f"> {line}" if line else ">" for line in lines))
        else:
            self._list(el, depth, nesting + 1)

    def _inline(self, el: HtmlElement, depth: int, nesting: int) -> str:
        inner = self._sub()
        inner.render_children(el, depth, nesting)
        inner.flush()
        return " ".join(" ".join(inner.blocks).split())

    def _link(self, el: HtmlElement, depth: int, nesting: int) -> None:
        if len(el):
            raw = el.text_content()
            label = clean_inline(LINK.sub(lambda m: m.group(2), self._inline(el, depth, nesting)))
        else:
            raw = el.text or ""
            label = clean_inline(raw)
        if not label:
            return
        # White space at the label's edges goes outside the link, so words neither glue nor gain spaces.
        before, after = (" " if raw[:1].isspace() else ""), (" " if raw[-1:].isspace() else "")
        index = self._links.number(el.get("href"))
        if index is None:
            self._parts.append(f"{before}{label}{after}")
        else:
            self._parts.append(f"{before}{LINK_START}{index}{LINK_MID}{label}{LINK_END}{after}")

    def _list(self, el: HtmlElement, depth: int, nesting: int) -> None:
        lines = []
        number = 1
        for child in el:
            if not isinstance(child.tag, str):
                continue
            inner = self._sub()
            if child.tag == "li":
                inner.render_children(child, depth + 1, nesting)
            else:
                inner.render(child, depth + 1, nesting)
            inner.flush()
            if not inner.blocks:
                continue
            marker = f"{number}. " if el.tag == "ol" else "- "
            number += 1
            first, *rest = "\n".join(inner.blocks).split("\n")
            lines.append(marker + first)
            lines.extend("  " + line for line in rest)
        if lines:
            self.blocks.append("\n".join(lines))

    def _table(self, el: HtmlElement, depth: int, nesting: int) -> None:
        rows = [row for row in el.iter("tr") if _owner_table(row) is el]
        if not rows or _is_layout(el):
            self.render_children(el, depth, nesting)
            self.flush()
            return
        grid = []
        for row in rows:
            cells = [self._inline(cell, depth + 1, nesting).replace("|", "\\|")
                     for cell in row if cell.tag in ("td", "th")]
            if any(cells):
                grid.append(cells)
        if not grid:
            return
        width = max(len(cells) for cells in grid)
        if width == 1:  # one column: lines of text
            self.blocks.append("\n".join(cells[0] for cells in grid if cells[0]))
            return
        grid = [cells + [""] * (width - len(cells)) for cells in grid]
        lines = ["| " + " | ".join(grid[0]) + " |", "|" + " --- |" * width]
        lines.extend("| " + " | ".join(cells) + " |" for cells in grid[1:])
        self.blocks.append("\n".join(lines))


class _Links:
    """The links of one page: absolute URLs numbered in the order they are first written."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.urls: list[str] = []
        self._numbers: dict[str, int] = {}
        self._resolved: dict[str, str | None] = {}

    def number(self, href: str | None) -> int | None:
        """The link's number, or ``None`` for a link that cannot be opened (fragment, mailto:, bad URL)."""
        if not href:
            return None
        if href not in self._resolved:
            self._resolved[href] = resolve(self.base_url, href)
        target = self._resolved[href]
        if target is None:
            return None
        number = self._numbers.get(target)
        if number is None:
            number = self._numbers[target] = len(self.urls)
            self.urls.append(target)
        return number


def resolve(base_url: str, href: str) -> str | None:
    """The absolute http(s) URL of a link, without its fragment; ``None`` for what cannot be opened."""
    href = href.strip()
    if not href or href.lower().startswith(_SKIP_LINKS):
        return None
    try:
        target = urljoin(base_url, href).split("#", 1)[0]
        parts = urlsplit(target)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 0) >= 0
    except ValueError:  # an invalid IPv6 host such as https://[YOUR-DOMAIN]/, a port out of range...
        return None
    return target if valid else None


def _owner_table(row: HtmlElement) -> HtmlElement | None:
    for ancestor in row.iterancestors("table"):
        return ancestor
    return None


def _is_layout(table: HtmlElement) -> bool:
    """A table used to lay a page out (tables, headings, lists inside, or long text in a cell), not data."""
    for inner in table.iter("table", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "pre", "blockquote", "td", "th"):
        if inner is table:
            continue
        if inner.tag not in ("td", "th") or len(inner.text_content()) > 400:
            return True
    return False
