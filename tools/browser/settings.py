"""The ``simple_browser`` tool's settings: its policy section, ``[browser]``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class BrowserSettings(BaseModel):
    """The ``[browser]`` section: search backend, which sites may be read, and how pages are fetched."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    search_backend: Literal["searxng", "duckduckgo", "brave", "tavily", "zhipu"] = Field(
        "duckduckgo", description="the search engine (brave, tavily and zhipu need their API key in the environment)")
    searxng_url: str | None = Field(None, description="your SearXNG instance, for search_backend = \"searxng\"")
    allow_domains: list[str] = Field(default_factory=list, description="if set, only these sites (and subdomains)")
    deny_domains: list[str] = Field(default_factory=list, description="sites never opened")
    allow_private_network: bool = Field(False, description="let pages on private and local addresses be opened")
    respect_robots: bool = Field(True, description="obey robots.txt")
    max_page_bytes: int = Field(5_000_000, ge=1024, description="largest page or file read")
    timeout_s: float = Field(15.0, gt=0, description="wall time of one page: robots.txt, redirects, retries and the body")
    max_results: int = Field(10, ge=1, le=50, description="search results listed")
    search_endpoint: str | None = Field(None, description="another URL for the backend's API (a proxy, a test server)")
    window_chars: int = Field(6000, ge=500, description="characters of a page shown at once; longer pages scroll")
    retries: int = Field(2, ge=0, le=5, description="retries of a fetch or search on connection errors, 429 and 5xx")
