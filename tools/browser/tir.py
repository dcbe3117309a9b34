"""The browser as GLM-4.6 knows it: ``browser.search``, ``browser.open`` and ``browser.find``.

GLM-4.5 and later were trained for tool-integrated reasoning (TIR) with the browser as three functions,
the successors of GLM-4 All Tools' one ``simple_browser``. Shown to a model of that family
(``builtin_style == "tir"``), :class:`~tools.browser.tool.BrowserTool` is these three
(:meth:`BrowserTool.variants <tools.browser.tool.BrowserTool.variants>`). They work on its one
:class:`~tools.browser.tool.BrowserSession`, so ids, the page cache and citations are shared:

- ``browser.search(query, num)`` lists numbered results `` # 【i†title†host】``;
- ``browser.open(id, cursor)`` opens a result or a link by its id, or a page by its URL, from a line;
- ``browser.find(pattern)`` lists the lines of the page opened last that hold ``pattern``.

The policy still knows them as ``simple_browser``: its ``[browser]`` section configures them, and
``require_approval = ["simple_browser"]`` covers all three.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.tool import Tool, ToolContext, ToolOutput

from .errors import BrowserError
from .view import Ref

if TYPE_CHECKING:
    from .tool import BrowserTool


def open_call(ref: Ref, cursor: int | None) -> str:
    """How a page is opened again under these names: ``browser.open(id=3, cursor=40)``."""
    return f"browser.open(id={ref.id})" if cursor is None else f"browser.open(id={ref.id}, cursor={cursor})"


class _BrowserFunction(Tool):
    """One of the browser's functions: a view of a :class:`BrowserTool`, working on its session."""

    def __init__(self, browser: "BrowserTool"):
        self.browser = browser

    def __repr__(self) -> str:
        return f"<Tool {self.name} of {self.browser.name}>"


class BrowserSearch(_BrowserFunction):
    name = "browser.search"
    description = ("Search the web. Lists numbered results 【id†title†host】 with snippets; open one with "
                   "browser.open(id). Cite what you use as 【id†text】.")

    async def forward(self, query: str, num: int | None = None, *, context: ToolContext) -> ToolOutput:
        """Search the web.

        Args:
            query: what to search for
            num: how many results to list (at most the browser's limit, which is also the default)
        """
        return await self.browser.session(context).search(query, None, count=num)


class BrowserOpen(_BrowserFunction):
    name = "browser.open"
    description = ("Open a search result or a link by its id (the i of 【i†…】), or a page by its URL. A long "
                   "page is shown a window at a time with numbered lines; cursor starts from a line.")

    async def forward(self, id: int | str, cursor: int | None = None, *, context: ToolContext) -> ToolOutput:
        """Open a page.

        Args:
            id: the id of a search result or a link on a page (an integer), or a URL
            cursor: the line to start from, as a long page's last line says
        """
        session = self.browser.session(context)
        if isinstance(id, str) and id.strip().isdigit():  # "3": an id written as text
            id = int(id)
        if isinstance(id, int):
            return await session.open_id(id, cursor, open_call)
        if not id.strip():
            raise BrowserError("browser.open needs an id shown by a search or on a page, or a URL.")
        return await session.open_url(id, cursor, open_call)


class BrowserFind(_BrowserFunction):
    name = "browser.find"
    description = ("Find text in the page opened last: the lines that hold it (ignoring case), with their "
                   "numbers and a line of context either side.")

    async def forward(self, pattern: str, *, context: ToolContext) -> ToolOutput:
        """Find text in the page opened last.

        Args:
            pattern: the text to look for (case does not matter)
        """
        return self.browser.session(context).find(pattern, open_call)
