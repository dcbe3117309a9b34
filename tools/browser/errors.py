"""The browser's expected failures. Each message is one sentence the model (and a person) can act on."""

from __future__ import annotations

from agent.errors import AgentError


class BrowserError(AgentError):
    """Base class of everything ``simple_browser`` raises on purpose."""


class FetchError(BrowserError):
    """A page could not be fetched: HTTP error, timeout, too many redirects, unreadable content."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class BlockedURLError(FetchError):
    """The policy forbids this address: not http(s), a private address, a denied domain."""


class RobotsDisallowedError(FetchError):
    """The site's robots.txt disallows the page for our user agent."""


class SearchError(BrowserError):
    """The search backend failed or is not configured."""
