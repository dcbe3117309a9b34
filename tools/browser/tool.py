"""``simple_browser``: GLM-4 All Tools' browser, in-process on httpx and beautifulsoup4.

Three actions, as GLM-4 calls them:

- ``search(query, recency_days)`` lists numbered results `` # 【i†title†host】`` with snippets
  (observation metadata ``browser_result``);
- ``mclick(ids)`` opens several results concurrently, one ``quote_result [i†source]`` observation a page;
- ``open_url(url, cursor)`` opens a page (``browser_result``); ``cursor`` scrolls a long one.

Ids are unique in a session (one per URL, numbered on across searches and page links), and every
id shown comes back as a :class:`~agent.messages.Citation`, so ``【i†...】`` in the final answer
resolves to its URL in ``RunResult.citations``.

A GLM-4.5+ model knows the browser by GLM-4.6's names instead, three functions on the same session
(:mod:`tools.browser.tir`): ``browser.search``, ``browser.open`` and ``browser.find``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Literal

import httpx

from agent.doctor import Finding
from agent.policy import Policy
from agent.tool import Tool, ToolContext, ToolOutput

from .actions import parse_action
from .errors import BrowserError
from .fetch import USER_AGENT, Fetcher, Resolver
from .reader import Document, clean_inline, is_readable, read
from .search import API_KEY_ENV, SearchBackend, backend_from_settings
from .settings import BrowserSettings
from .view import (Ref, Refs, Reopen, ShownResult, format_results, host_of, open_url_call, render_find, render_page,
                   url_key)

MAX_MCLICK = 10  # GLM-4's prompt asks for 3-10 pages a call
MAX_CONCURRENT_FETCHES = 8


class BrowserSession:
    """One session's browser: its connections, the ids it has shown, the pages it has read."""

    def __init__(self, settings: BrowserSettings, *, resolver: Resolver | None = None,
                 search_backend: SearchBackend | None = None):
        self.settings = settings
        self.fetcher = Fetcher(settings, resolver=resolver)
        self.refs = Refs()
        self._backend = search_backend
        self._search_client: httpx.AsyncClient | None = None
        self._pages: dict[str, asyncio.Future[Document]] = {}  # the per-session cache: each page read once
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_FETCHES)
        self.last_page: tuple[Ref, Document] | None = None  # the page opened last (what find looks in)

    async def aclose(self) -> None:
        for future in self._pages.values():
            future.cancel()
        if self._search_client is not None:
            await self._search_client.aclose()
        await self.fetcher.aclose()

    # -- actions ------------------------------------------------------------------------------------

    async def search(self, query: str | None, recency_days: int | None, count: int | None = None) -> ToolOutput:
        """Results for ``query``: ``count`` of them (at most the policy's ``max_results``, which is the default)."""
        if not query or not query.strip():
            raise BrowserError('search needs a query, e.g. search("GLM-4 technical report", recency_days=30).')
        limit = self.settings.max_results if count is None else max(1, min(count, self.settings.max_results))
        backend = self._backend or backend_from_settings(self.settings)
        if self._search_client is None:
            self._search_client = httpx.AsyncClient(timeout=self.settings.timeout_s, follow_redirects=True,
                                                    headers={"User-Agent": USER_AGENT})
        results = await backend.search(self._search_client, query.strip(), recency_days=recency_days,
                                       count=limit, retrying=self.fetcher.retrying)
        allowed = [r for r in results if self.fetcher.domain_allowed(host_of(r.url) or "")]
        hidden = len(results) - len(allowed)
        note = f"({hidden} results from domains the policy does not allow were left out.)" if hidden else ""
        if not allowed:
            return ToolOutput(text=f'No results for "{query.strip()}". {note}'.strip(), metadata="browser_result")
        shown = [ShownResult(self.refs.add(r.url, r.title), r.title, r.snippet, r.published) for r in allowed]
        citations = [Ref(s.ref.id, s.ref.url, s.title).citation() for s in shown]
        return ToolOutput(text=format_results(shown, note), metadata="browser_result", citations=citations)

    async def mclick(self, ids: list[int] | None, context: ToolContext) -> list[ToolOutput]:
        if not ids:
            raise BrowserError("mclick needs the ids of search results or page links, e.g. mclick([0, 2, 5]).")
        wanted = list(dict.fromkeys(ids))
        chosen = wanted[:MAX_MCLICK]
        refs = [self.refs.get(i) for i in chosen]
        done = 0

        async def load(ref: Ref | None) -> Document | BaseException | None:
            nonlocal done
            if ref is None:
                return None
            try:
                return await self.open(ref.url)
            except Exception as exc:  # one page failing must not lose the others
                return exc
            finally:
                done += 1
                context.progress("simple_browser", f"opened {done}/{len(chosen)} pages", done / len(chosen))

        documents = await asyncio.gather(*(load(ref) for ref in refs))
        # Render in the order asked for, so the ids given to page links do not depend on timing.
        outputs = [self._quote(i, ref, doc) for i, ref, doc in zip(chosen, refs, documents)]
        if len(wanted) > MAX_MCLICK:
            outputs[0].text = f"(Opened the first {MAX_MCLICK} of the {len(wanted)} ids.)\n{outputs[0].text}"
        return outputs

    def _quote(self, ref_id: int, ref: Ref | None, doc: Document | BaseException | None) -> ToolOutput:
        if ref is None:
            return ToolOutput(text=f"There is no result {ref_id}: use ids shown by search or on pages (known ids: {self.refs.known()}).",
                              metadata="system_error", is_error=True)
        if not isinstance(doc, Document):
            reason = str(doc) if isinstance(doc, BrowserError) else f"{type(doc).__name__}: {doc}"
            return ToolOutput(text=f"Could not open 【{ref_id}†{ref.title or host_of(ref.url)}】 ({ref.url}): {reason}",
                              metadata="system_error", is_error=True)
        view = render_page(doc, ref, self.refs, cursor=0, window_chars=self.settings.window_chars, quote=True)
        return ToolOutput(text=view.text, metadata=f"quote_result [{ref_id}†source]", citations=view.citations)

    async def open_url(self, url: str | None, cursor: int | None, reopen: Reopen = open_url_call) -> ToolOutput:
        if not url or not url.strip():
            raise BrowserError('open_url needs a URL, e.g. open_url("https://example.com/page").')
        url = url.strip()
        if "://" not in url and "." in url.split("/", 1)[0]:
            url = "https://" + url  # "example.com/page": what people and models often write
        return await self.show(self.refs.add(url), cursor, reopen)

    async def open_id(self, ref_id: int, cursor: int | None, reopen: Reopen) -> ToolOutput:
        """The page behind an id that search or a page showed."""
        ref = self.refs.get(ref_id)
        if ref is None:
            raise BrowserError(f"There is no id {ref_id}: use an id shown by a search or on a page (known ids: "
                               f"{self.refs.known()}), or a URL.")
        return await self.show(ref, cursor, reopen)

    async def show(self, ref: Ref, cursor: int | None, reopen: Reopen) -> ToolOutput:
        """One window of the page ``ref`` names, from line ``cursor``; it becomes the page opened last."""
        doc = await self.open(ref.url)
        ref.title = ref.title or doc.title
        try:
            view = render_page(doc, ref, self.refs, cursor=cursor or 0, window_chars=self.settings.window_chars,
                               quote=False, reopen=reopen)
        except ValueError as exc:
            raise BrowserError(f"{exc}; call {reopen(ref, None)} without a cursor to start at the top.") from None
        self.last_page = (ref, doc)
        return ToolOutput(text=view.text, metadata="browser_result", citations=view.citations)

    def find(self, pattern: str, reopen: Reopen) -> ToolOutput:
        """The lines of the page opened last that hold ``pattern``, ignoring case."""
        if not pattern.strip():
            raise BrowserError("find needs a pattern: the text to look for in the page opened last.")
        if self.last_page is None:
            raise BrowserError("No page is open yet: open one first (find looks in the page opened last).")
        ref, doc = self.last_page
        view = render_find(doc, ref, self.refs, pattern, window_chars=self.settings.window_chars, reopen=reopen)
        if view is None:
            title = clean_inline(doc.title) or host_of(doc.url)
            return ToolOutput(text=f'No match: "{pattern}" is nowhere in 【{ref.id}†{title}】 ({doc.url}).',
                              metadata="browser_result")
        return ToolOutput(text=view.text, metadata="browser_result", citations=view.citations)

    # -- pages --------------------------------------------------------------------------------------

    async def open(self, url: str) -> Document:
        """The page at ``url``, fetched and read once per session (concurrent callers share the fetch)."""
        key = url_key(url)
        future = self._pages.get(key)
        if future is None:
            future = self._pages[key] = asyncio.ensure_future(self._load(url))
        try:
            return await asyncio.shield(future)
        except Exception:
            if self._pages.get(key) is future:
                del self._pages[key]  # failures are not cached: a later call may succeed
            raise

    async def _load(self, url: str) -> Document:
        async with self._slots:
            result = await self.fetcher.fetch(url, accept=is_readable)
        return await asyncio.to_thread(read, result)  # parsing is CPU work: keep the event loop free


class BrowserTool(Tool):
    """The ``simple_browser`` built-in tool. Its state lives in ``context.state["simple_browser"]``."""

    name = "simple_browser"
    builtin = "simple_browser"
    builtin_prompt = (
        "你可以使用 `simple_browser` 工具。该工具支持以下函数：\n"
        "`search(query: str, recency_days: int)`：使用搜索引擎进行查询并显示结果，可以使用 `recency_days` 参数控制搜索内容的时效性。\n"
        "`mclick(ids: list[int])`：获取一系列指定 id 的页面内容。每次调用时，须选择3-10个页面。选择多个角度的页面，同时尽可能选择可信任的信息来源。考虑到部分页面是无法加载的，你也可以多打开一些可能有用的页面而不用担心内容过多。\n"
        "`open_url(url: str)`：打开指定的 URL。\n"
        "\n"
        "使用 `【{引用 id}†{引用文本}】` 来引用内容。\n"
        "\n"
        "操作步骤：1. 使用 `search` 来获得信息列表; 2. 使用 `mclick` 来获取指定 ID 页面的内容; 3. 根据获得的内容进行回复。在回复中应当引用信息来源。\n"
        " 如果用户提供了 URL，也可以用 `open_url` 直接打开页面。\n"
        "如果初次搜索结果没有找到合适的信息，也可以再次使用 `search` 进行搜索。"
    )  # glm-4-9b-chat's own words, from its chat template
    usage = 'Send one call such as search("query", recency_days=7), mclick([0, 2]) or open_url("https://...").'
    section, settings_model = "browser", BrowserSettings
    description = (
        "Search the web and read pages. action='search' with a query (and recency_days) lists numbered "
        "results; action='mclick' with ids opens several results at once; action='open_url' with a url "
        "opens a page, and cursor scrolls a long page from that line. Cite what you use as 【id†text】."
    )

    def __init__(self, policy: Policy | None = None, *, resolver: Resolver | None = None,
                 search_backend: SearchBackend | None = None):
        self.policy = policy
        self.resolver = resolver
        self.search_backend = search_backend

    @classmethod
    def doctor(cls, policy: Policy) -> list[Finding]:
        return _search(policy)

    def parse_body(self, body: str) -> dict[str, Any]:
        return parse_action(body)

    async def forward(self, action: Literal["search", "mclick", "open_url"], query: str | None = None,
                      recency_days: int | None = None, ids: list[int] | None = None, url: str | None = None,
                      cursor: int | None = None, *, context: ToolContext) -> ToolOutput | list[ToolOutput]:
        """Search the web, open several search results at once, or open a URL.

        Args:
            action: "search" (needs query), "mclick" (needs ids) or "open_url" (needs url)
            query: what to search for
            recency_days: only results from the last N days (search)
            ids: ids of search results or page links to open, e.g. [0, 2, 5] (mclick)
            url: the page to open (open_url)
            cursor: the line of a long page to start from, as the page's last line says (open_url)
        """
        session = self.session(context)
        if action == "search":
            return await session.search(query, recency_days)
        if action == "mclick":
            return await session.mclick(ids, context)
        return await session.open_url(url, cursor)

    def variants(self, builtin_style: str) -> list[Tool]:
        """GLM-4.5+ (``"tir"``) knows the browser as three functions on this tool's session."""
        if builtin_style == "tir":
            from .tir import BrowserFind, BrowserOpen, BrowserSearch  # they build on this module

            return [BrowserSearch(self), BrowserOpen(self), BrowserFind(self)]
        return [self]

    def session(self, context: ToolContext) -> BrowserSession:
        """This session's browser, made on first use and closed with the session."""
        session = context.state.get(self.name)
        if session is None:
            settings = (self.policy or context.policy).browser
            session = context.state[self.name] = BrowserSession(settings, resolver=self.resolver,
                                                                search_backend=self.search_backend)
            context.resources.push_async_callback(session.aclose)
        return session


def _search(policy: Policy) -> list[Finding]:
    """Whether the search backend the policy names can answer: its key, or its URL."""
    settings = policy.browser
    name = settings.search_backend
    if name in API_KEY_ENV:
        variables = API_KEY_ENV[name]
        if not any(os.environ.get(var) for var in variables):
            return [Finding(check="search", status="fail", detail=f"search_backend = {name!r} but {variables[0]} is not set",
                            fix=f"export {variables[0]}=..., or set [browser] search_backend to another backend")]
        return [Finding(check="search", status="ok", detail=f"{name}, key from {variables[0]}")]
    if name == "searxng" and not settings.searxng_url:
        return [Finding(check="search", status="fail", detail="search_backend = 'searxng' without searxng_url",
                        fix="set [browser] searxng_url = 'http://your-searxng:8080'")]
    if name == "duckduckgo":
        return [Finding(check="search", status="warn", detail="duckduckgo: no key needed, but it rate-limits and may "
                        "answer with a CAPTCHA", fix="for steady use, run SearXNG or set a Brave or Tavily key")]
    return [Finding(check="search", status="ok", detail=f"{name} at {settings.searxng_url}")]
