"""Search backends: SearXNG, DuckDuckGo, Brave, Tavily and Zhipu, behind one ``search`` method.

Chosen by the policy's ``[browser] search_backend``. SearXNG (self-hosted, no key) is read at
``searxng_url``; DuckDuckGo's HTML endpoint needs no key; Brave, Tavily and Zhipu read their keys
from the environment (``BRAVE_API_KEY``, ``TAVILY_API_KEY``, ``ZHIPUAI_API_KEY``).
``[browser] search_endpoint`` points a backend at another URL (a proxy, a test server).

``recency_days`` becomes each backend's own filter: SearXNG, DuckDuckGo and Tavily have day, week,
month and year (we round up, so nothing recent is lost), Zhipu has the same four, Brave takes an
exact date range.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import httpx
from bs4 import BeautifulSoup, Tag
from pydantic import BaseModel

from agent.retrying import RetryPolicy

from .errors import SearchError
from .fetch import BROWSER_RETRIES
from .settings import BrowserSettings

API_KEY_ENV: dict[str, tuple[str, ...]] = {
    "brave": ("BRAVE_API_KEY", "BRAVE_SEARCH_API_KEY"),
    "tavily": ("TAVILY_API_KEY",),
    "zhipu": ("ZHIPUAI_API_KEY", "ZHIPU_API_KEY"),
}


class SearchResult(BaseModel):
    title: str
    url: str
    snippet: str = ""
    published: str | None = None


def recency_bucket(days: int | None) -> str | None:
    """The smallest of day/week/month/year that covers ``days`` (``None``: no filter)."""
    if days is None or days <= 0:
        return None
    for bucket, limit in (("day", 1), ("week", 7), ("month", 31), ("year", 366)):
        if days <= limit:
            return bucket
    return None


class SearchBackend:
    """One search service. Subclasses build the request and read the answer."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    default_endpoint: ClassVar[str] = ""
    key_env: ClassVar[str] = ""  # the environment variable people set, for error messages

    def __init__(self, endpoint: str | None = None, api_key: str | None = None):
        self.endpoint = endpoint or self.default_endpoint
        self.api_key = api_key

    async def search(self, client: httpx.AsyncClient, query: str, *, recency_days: int | None = None,
                     count: int = 10, retrying: RetryPolicy = BROWSER_RETRIES) -> list[SearchResult]:
        response = await _send(client, self.build_request(client, query, recency_days, count), self, retrying)
        results = self.parse(response)
        unique: dict[str, SearchResult] = {}
        for result in results:
            if result.url.startswith(("http://", "https://")):
                unique.setdefault(result.url, result)
        return list(unique.values())[:count]

    def build_request(self, client: httpx.AsyncClient, query: str, recency_days: int | None, count: int) -> httpx.Request:
        raise NotImplementedError

    def parse(self, response: httpx.Response) -> list[SearchResult]:
        raise NotImplementedError

    def check(self, response: httpx.Response) -> None:
        """Raise ``SearchError`` with one clear sentence when the answer is not results."""
        status = response.status_code
        if status in (401, 403):
            hint = f"; check {self.key_env}" if self.key_env else ""
            raise SearchError(f"{self.label} refused the request (HTTP {status}){hint}.")
        if status == 429:
            raise SearchError(f"{self.label} is rate limiting us (HTTP 429); wait a little before searching again.")
        if status >= 400:
            raise SearchError(f"{self.label} answered HTTP {status} {response.reason_phrase}.".replace(" .", "."))

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise SearchError(f"{self.label} at {self.endpoint} did not answer with JSON.") from None


class SearXNG(SearchBackend):
    """A SearXNG instance's JSON API (``format=json`` must be enabled in its settings.yml)."""

    name = "searxng"
    label = "SearXNG"

    def __init__(self, base_url: str):
        super().__init__(endpoint=base_url.rstrip("/") + "/search")

    def build_request(self, client, query, recency_days, count):
        params = {"q": query, "format": "json"}
        if bucket := recency_bucket(recency_days):
            params["time_range"] = bucket
        return client.build_request("GET", self.endpoint, params=params)

    def check(self, response):
        if response.status_code == 403:
            raise SearchError(
                f"SearXNG at {self.endpoint} refused the request (HTTP 403); enable the json format "
                "(search: formats: [html, json]) in its settings.yml."
            )
        super().check(response)

    def parse(self, response):
        return _results(self._json(response), date_key="publishedDate")


class DuckDuckGo(SearchBackend):
    """DuckDuckGo's no-JavaScript HTML page (no key; it sometimes answers with a bot check)."""

    name = "duckduckgo"
    label = "DuckDuckGo"
    default_endpoint = "https://html.duckduckgo.com/html/"

    def build_request(self, client, query, recency_days, count):
        data = {"q": query}
        if bucket := recency_bucket(recency_days):
            data["df"] = bucket[0]  # d, w, m, y
        return client.build_request("POST", self.endpoint, data=data,
                                    headers={"Referer": "https://html.duckduckgo.com/"})

    def check(self, response):
        if response.status_code == 202 or is_duckduckgo_captcha(response.text):
            raise SearchError(DUCKDUCKGO_CAPTCHA)  # it answers 202 with the bot check
        super().check(response)

    def parse(self, response):
        return parse_duckduckgo_html(response.text)


DUCKDUCKGO_CAPTCHA = (
    "DuckDuckGo answered with a CAPTCHA (its bot check) instead of results; wait a few minutes, "
    "or set [browser] search_backend to searxng, brave, tavily or zhipu."
)


def parse_duckduckgo_html(html: str) -> list[SearchResult]:
    """Results of DuckDuckGo's HTML page; ``SearchError`` when it is the CAPTCHA page instead."""
    if is_duckduckgo_captcha(html):
        raise SearchError(DUCKDUCKGO_CAPTCHA)
    soup = BeautifulSoup(html, "html.parser")
    results = []
    for block in soup.select("div.result"):
        if "result--ad" in (block.get("class") or []):
            continue
        link = block.select_one("a.result__a")
        if not isinstance(link, Tag) or not link.get("href"):
            continue
        url = _unwrap_duckduckgo(str(link["href"]))
        if urlsplit(url).hostname in ("duckduckgo.com", "www.duckduckgo.com"):
            continue  # ads and internal links
        snippet = block.select_one(".result__snippet")
        results.append(SearchResult(title=link.get_text(" ", strip=True), url=url,
                                    snippet=snippet.get_text(" ", strip=True) if snippet else ""))
    return results


def is_duckduckgo_captcha(html: str) -> bool:
    markers = ("anomaly-modal", "challenge-form", "bots use DuckDuckGo too", "anomaly.js")
    return any(marker in html for marker in markers)


def _unwrap_duckduckgo(href: str) -> str:
    """The target of DuckDuckGo's redirect links (``//duckduckgo.com/l/?uddg=...``)."""
    if href.startswith("//"):
        href = "https:" + href
    parts = urlsplit(href)
    if parts.hostname and parts.hostname.endswith("duckduckgo.com") and parts.path.startswith("/l/"):
        target = parse_qs(parts.query).get("uddg")
        if target:
            return target[0]
    return href


class Brave(SearchBackend):
    name = "brave"
    label = "Brave Search"
    default_endpoint = "https://api.search.brave.com/res/v1/web/search"
    key_env = "BRAVE_API_KEY"

    def build_request(self, client, query, recency_days, count):
        params: dict[str, Any] = {"q": query, "count": min(count, 20)}
        if freshness := brave_freshness(recency_days):
            params["freshness"] = freshness
        headers = {"X-Subscription-Token": self.api_key or "", "Accept": "application/json"}
        return client.build_request("GET", self.endpoint, params=params, headers=headers)

    def parse(self, response):
        data = self._json(response)
        return [
            SearchResult(title=item.get("title") or item["url"], url=item["url"],
                         snippet=_plain(item.get("description") or ""), published=item.get("age"))
            for item in (data.get("web") or {}).get("results", []) if item.get("url")
        ]


def brave_freshness(days: int | None, today: dt.date | None = None) -> str | None:
    """Brave's ``freshness``: ``pd``/``pw``/``pm``/``py``, or an exact ``YYYY-MM-DDtoYYYY-MM-DD`` range."""
    if days is None or days <= 0:
        return None
    named = {1: "pd", 7: "pw", 30: "pm", 31: "pm", 365: "py"}
    if days in named:
        return named[days]
    today = today or dt.date.today()
    return f"{today - dt.timedelta(days=days):%Y-%m-%d}to{today:%Y-%m-%d}"


class Tavily(SearchBackend):
    name = "tavily"
    label = "Tavily"
    default_endpoint = "https://api.tavily.com/search"
    key_env = "TAVILY_API_KEY"

    def build_request(self, client, query, recency_days, count):
        body: dict[str, Any] = {"query": query, "max_results": min(count, 20), "search_depth": "basic"}
        if bucket := recency_bucket(recency_days):
            body["time_range"] = bucket
        headers = {"Authorization": f"Bearer {self.api_key}"}
        return client.build_request("POST", self.endpoint, json=body, headers=headers)

    def parse(self, response):
        return _results(self._json(response), date_key="published_date")


class Zhipu(SearchBackend):
    """Zhipu AI's (BigModel) web search API, the search GLM-4's makers serve."""

    name = "zhipu"
    label = "Zhipu web search"
    default_endpoint = "https://open.bigmodel.cn/api/paas/v4/web_search"
    key_env = "ZHIPUAI_API_KEY"
    recency_filters: ClassVar[dict[str | None, str]] = {
        None: "noLimit", "day": "oneDay", "week": "oneWeek", "month": "oneMonth", "year": "oneYear"}

    def build_request(self, client, query, recency_days, count):
        body = {"search_query": query, "search_engine": "search_std", "count": min(count, 50),
                "search_recency_filter": self.recency_filters[recency_bucket(recency_days)]}
        headers = {"Authorization": f"Bearer {self.api_key}"}
        return client.build_request("POST", self.endpoint, json=body, headers=headers)

    def parse(self, response):
        data = self._json(response)
        return [
            SearchResult(title=item.get("title") or item["link"], url=item["link"], snippet=item.get("content") or "",
                         published=_date(item.get("publish_date")))
            for item in data.get("search_result") or [] if item.get("link")
        ]


BACKENDS: dict[str, type[SearchBackend]] = {
    cls.name: cls for cls in (SearXNG, DuckDuckGo, Brave, Tavily, Zhipu)
}


def backend_from_settings(settings: BrowserSettings, environ: Mapping[str, str] | None = None) -> SearchBackend:
    """The backend the policy names, configured; ``SearchError`` saying what is missing otherwise."""
    environ = os.environ if environ is None else environ
    name = settings.search_backend
    if name == "searxng":
        url = settings.searxng_url or settings.search_endpoint
        if not url:
            raise SearchError(
                "The search backend is searxng but [browser] searxng_url is not set; set it to your "
                "instance, e.g. searxng_url = \"http://localhost:8888\"."
            )
        return SearXNG(url)
    cls = BACKENDS[name]
    if name in API_KEY_ENV:
        key = next((environ[var] for var in API_KEY_ENV[name] if environ.get(var)), None)
        if not key:
            raise SearchError(
                f"The search backend is {name} but the environment variable {API_KEY_ENV[name][0]} is not set; "
                f"set it to your {cls.label} API key, or choose search_backend = \"duckduckgo\" or \"searxng\"."
            )
        return cls(endpoint=settings.search_endpoint, api_key=key)
    return cls(endpoint=settings.search_endpoint)


# ---------------------------------------------------------------------------------------------------
# Requests


async def _send(client: httpx.AsyncClient, request: httpx.Request, backend: SearchBackend,
                retrying: RetryPolicy) -> httpx.Response:
    """Send with the browser's retries; turn failures into one clear sentence."""
    try:
        response = await retrying.call(lambda: client.send(request))
    except httpx.TimeoutException:
        raise SearchError(f"{backend.label} at {backend.endpoint} did not answer in time; try again.") from None
    except httpx.HTTPError as exc:
        raise SearchError(f"Could not reach {backend.label} at {backend.endpoint} ({type(exc).__name__}: {exc}).") from None
    backend.check(response)
    return response


def _plain(text: str) -> str:
    return BeautifulSoup(text, "html.parser").get_text() if "<" in text else text


def _date(value: Any) -> str | None:
    """``2024-05-01`` from the many date formats backends send; ``None`` when absent."""
    if not value:
        return None
    text = str(value)
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).date().isoformat()
    except ValueError:
        return text[:40]


def _results(data: dict, date_key: str) -> list[SearchResult]:
    """SearXNG's and Tavily's shared shape: ``results`` with url, title, content and a date."""
    return [
        SearchResult(title=item.get("title") or item["url"], url=item["url"], snippet=item.get("content") or "",
                     published=_date(item.get(date_key)))
        for item in data.get("results", []) if item.get("url")
    ]
