"""``simple_browser``: search, mclick and open_url with citations, fetched safely. See :mod:`tools.browser.tool`."""

from .errors import BlockedURLError, BrowserError, FetchError, RobotsDisallowedError, SearchError
from .tool import BrowserSession, BrowserTool

__all__ = [
           "BlockedURLError",
           "BrowserError",
           "BrowserSession",
           "BrowserTool",
           "FetchError",
           "RobotsDisallowedError",
           "SearchError",
]
