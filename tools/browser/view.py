"""What the model sees: citation ids, search result lists and pages shown a window at a time.

Every URL the model is shown gets one id for the whole session (search results are numbered on
across searches, links on pages join the same sequence), so ``【3†...】`` in an answer means one
thing. Pages longer than one window are shown with numbered lines and a note saying what is
visible and how to scroll: ``open_url(url, cursor=N)`` shows the lines from N on (``browser.open(id=i,
cursor=N)`` under GLM-4.6's names). :func:`render_find` lists the lines of a page that hold a pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from agent.messages import Citation

from .reader import LINK, Document, clean_inline

MAX_LINE_CHARS = 400  # longer lines are wrapped so a window can end inside a long paragraph
FIND_CONTEXT = 1  # lines shown before and after each line a pattern was found in


@dataclass
class Ref:
    """One thing the model may click or cite."""

    id: int
    url: str
    title: str = ""

    def citation(self) -> Citation:
        return Citation(id=str(self.id), url=self.url, title=self.title)


class Refs:
    """The citation ids of one session: one per URL, in the order the model first sees them."""

    def __init__(self) -> None:
        self._by_url: dict[str, Ref] = {}
        self._by_id: dict[int, Ref] = {}

    def add(self, url: str, title: str = "") -> Ref:
        key = url_key(url)
        ref = self._by_url.get(key)
        if ref is None:
            ref = Ref(id=len(self._by_id), url=url, title=title)
            self._by_url[key] = self._by_id[ref.id] = ref
        elif title and not ref.title:
            ref.title = title
        return ref

    def get(self, ref_id: int) -> Ref | None:
        return self._by_id.get(ref_id)

    def known(self) -> str:
        """The ids there are, for error messages: ``"0-11"``."""
        return f"0-{len(self._by_id) - 1}" if self._by_id else "none yet (search first)"


def url_key(url: str) -> str:
    """URLs that name the same page: no fragment, no trailing slash on a bare host."""
    url = url.split("#", 1)[0]
    parts = urlsplit(url)
    return url[:-1] if parts.path == "/" and not parts.query and url.endswith("/") else url


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").removeprefix("www.")


# ---------------------------------------------------------------------------------------------------
# Search results


@dataclass
class ShownResult:
    ref: Ref
    title: str
    snippet: str
    published: str | None = None


def format_results(results: list[ShownResult], note: str = "") -> str:
    """Results the way GLM-4 was trained to read them: `` # 【i†title†host】`` then the snippet."""
    lines = []
    for result in results:
        host = host_of(result.ref.url)
        lines.append(f" # 【{result.ref.id}†{clean_inline(result.title) or host}†{host}】")
        snippet = clean_inline(result.snippet)
        if result.published:
            snippet = f"{result.published} — {snippet}" if snippet else result.published
        lines.append(snippet)
    if note:
        lines.append(note)
    lines.append("Visible: 0% - 100%")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Pages


@dataclass
class PageView:
    text: str
    citations: list[Citation]


# The call that shows a page (from a line, when given one), as the model is told to send it.
Reopen = Callable[[Ref, int | None], str]


def open_url_call(ref: Ref, cursor: int | None) -> str:
    """GLM-4's: ``open_url("https://...", cursor=40)``."""
    return f'open_url("{ref.url}")' if cursor is None else f'open_url("{ref.url}", cursor={cursor})'


def page_lines(doc: Document) -> list[str]:
    """The document's non-empty lines, long ones wrapped (never inside a link)."""
    lines: list[str] = []
    for line in doc.text.splitlines():
        if line.strip():
            lines.extend(_wrap(line, MAX_LINE_CHARS))
    return lines


def render_page(doc: Document, ref: Ref, refs: Refs, *, cursor: int, window_chars: int, quote: bool,
                reopen: Reopen = open_url_call) -> PageView:
    """One window of a page from line ``cursor``.

    ``quote=False`` is ``open_url``'s view (a header naming the page and its id); ``quote=True`` is
    one page of ``mclick`` (GLM-4's ``quote_result``: the id is in the metadata). ``reopen`` writes the
    call that reads on.
    """
    lines = page_lines(doc) or ["(The page has no readable text.)"]
    if cursor < 0 or cursor >= len(lines):
        raise ValueError(f"cursor {cursor} is outside the page, which has lines 0-{len(lines) - 1}")
    start, end = _window(lines, cursor, window_chars)
    whole = start == 0 and end == len(lines)
    shown = lines[start:end] if whole else [f"L{n}: {line}" for n, line in zip(range(start, end), lines[start:end])]
    body, link_refs = _number_links("\n".join(shown), doc, refs)
    title = clean_inline(doc.title) or host_of(doc.url)
    if quote:
        head = [] if lines[0].lstrip("# ").strip() == title else [f"# {title}"]
    else:
        head = [f" # 【{ref.id}†{title}†{host_of(doc.url)}】", f"URL: {doc.url}", ""]
    tail = [f"Note: {note}" for note in doc.notes]
    tail.append(_visible(lines, start, end, reopen(ref, end)))
    citations = [Ref(ref.id, doc.url, title).citation(), *(r.citation() for r in link_refs)]
    return PageView(text="\n".join([*head, body, *tail]), citations=citations)


def render_find(doc: Document, ref: Ref, refs: Refs, pattern: str, *, window_chars: int,
                reopen: Reopen) -> PageView | None:
    """The lines of a page that hold ``pattern`` (ignoring case), each with its number and a line of
    context either side, under the page's ``【id†title†host】``; ``None`` when no line holds it.

    Lines are numbered as a scrolled page numbers them, so ``reopen(ref, line)`` shows the text around
    one. As many matches are listed as fit in ``window_chars``; the count says how many there are.
    """
    lines = page_lines(doc)
    needle = pattern.casefold()
    hits = [n for n, line in enumerate(lines) if needle in LINK.sub(r"\2", line).casefold()]
    if not hits:
        return None
    shown: list[int] = []
    used = listed = 0
    for hit in hits:
        block = list(range(max(hit - FIND_CONTEXT, shown[-1] + 1 if shown else 0),
                           min(hit + FIND_CONTEXT + 1, len(lines))))
        cost = sum(len(lines[n]) + 8 for n in block)
        if listed and used + cost > window_chars:
            break
        shown += block
        used += cost
        listed += 1
    rows: list[str] = []
    for before, n in zip([None, *shown], shown):
        if before is not None and n > before + 1:
            rows.append("…")
        rows.append(f"L{n}: {lines[n]}")
    body, link_refs = _number_links("\n".join(rows), doc, refs)
    title = clean_inline(doc.title) or host_of(doc.url)
    where = f"line{'s' if listed > 1 else ''} {', '.join(map(str, hits[:listed]))}"
    found = f'Found "{pattern}" on {len(hits)} line{"s" if len(hits) > 1 else ""} of {len(lines)}'
    more = f"; the first {listed} are shown" if listed < len(hits) else ""
    head = [f" # 【{ref.id}†{title}†{host_of(doc.url)}】", f"{found}{more}: {where}."]
    tail = f"To read from a line, call {reopen(ref, max(0, hits[0] - FIND_CONTEXT))}."
    citations = [Ref(ref.id, doc.url, title).citation(), *(r.citation() for r in link_refs)]
    return PageView(text="\n".join([*head, body, tail]), citations=citations)


def _window(lines: list[str], cursor: int, budget: int) -> tuple[int, int]:
    end = cursor
    used = 0
    while end < len(lines) and (end == cursor or used + len(lines[end]) + 1 <= budget):
        used += len(lines[end]) + 1
        end += 1
    return cursor, end


def _visible(lines: list[str], start: int, end: int, read_on: str) -> str:
    if start == 0 and end == len(lines):
        return "Visible: 0% - 100%"
    total = sum(len(line) + 1 for line in lines)
    before = sum(len(line) + 1 for line in lines[:start])
    shown = sum(len(line) + 1 for line in lines[start:end])
    span = f"Visible: lines {start}-{end - 1} of {len(lines)} ({100 * before // total}% - {100 * (before + shown) // total}%)."
    if end < len(lines):
        return f"{span} To read on, call {read_on}."
    return f"{span} This is the end of the page."


def _number_links(text: str, doc: Document, refs: Refs) -> tuple[str, list[Ref]]:
    """Give the links in ``text`` session ids: ``【id†text†host】`` (host only when it is another site)."""
    page_host = host_of(doc.url)
    shown: dict[int, Ref] = {}

    def replace(match: re.Match[str]) -> str:
        url = doc.links[int(match.group(1))]
        label = match.group(2)
        ref = refs.add(url, label)
        shown[ref.id] = ref
        host = host_of(url)
        return f"【{ref.id}†{label}†{host}】" if host != page_host else f"【{ref.id}†{label}】"

    return LINK.sub(replace, text), list(shown.values())


def _wrap(line: str, width: int) -> list[str]:
    """Split a long line at spaces (or anywhere, for text without spaces), never inside a link."""
    pieces = []
    while len(line) > width:
        spans = [(m.start(), m.end()) for m in LINK.finditer(line)]
        cut = next((i for i in range(width, width // 2, -1)
                    if line[i] == " " and not any(start < i < end for start, end in spans)), None)
        if cut is None:
            cut = width
            for start, end in spans:  # a cut inside a link moves to the link's edge
                if start < cut < end:
                    cut = start if start > 0 else end
                    break
        if cut >= len(line):
            break
        pieces.append(line[:cut].rstrip())
        line = line[cut:].lstrip()
    pieces.append(line)
    return [piece for piece in pieces if piece]

