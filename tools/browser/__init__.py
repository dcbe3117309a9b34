"""``simple_browser``: search, mclick and open_url with citations, fetched safely. See :mod:`tools.browser.tool`;
GLM-4.5+ models know it as ``browser.search``, ``browser.open`` and ``browser.find`` (:mod:`tools.browser.tir`)."""

from .errors import BlockedURLError, BrowserError, FetchError, RobotsDisallowedError, SearchError
from .tir import BrowserFind, BrowserOpen, BrowserSearch
from .tool import BrowserSession, BrowserTool

__all__ = [
           "BlockedURLError",
           "BrowserError",
           "BrowserFind",
           "BrowserOpen",
           "BrowserSearch",
           "BrowserSession",
           "BrowserTool",
           "FetchError",
           "RobotsDisallowedError",
           "SearchError",
]
