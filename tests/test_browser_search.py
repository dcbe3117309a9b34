"""Search backends: the requests they build and the answers they read, against a loopback server."""

import datetime as dt

import httpx
import pytest

from agent.retrying import RetryPolicy
from tools.browser.errors import SearchError
from tools.browser.search import (
    Brave,
    DuckDuckGo,
    SearXNG,
    Tavily,
    Zhipu,
    backend_from_settings,
    brave_freshness,
    recency_bucket,
)
from tools.browser.settings import BrowserSettings
from tools.browser.testing import LocalSite, Route


@pytest.fixture
def site():
    with LocalSite() as server:
        yield server


@pytest.fixture
async def client():
    async with httpx.AsyncClient(timeout=5) as http:
        yield http


def test_recency_days_round_up_to_the_next_filter():
    assert [recency_bucket(d) for d in (None, 0, 1, 3, 7, 20, 31, 200, 366, 1000)] == [
        None, None, "day", "week", "week", "month", "month", "year", "year", None]
    today = dt.date(2024, 6, 30)
    assert [brave_freshness(d, today) for d in (None, 1, 7, 31, 365)] == [None, "pd", "pw", "pm", "py"]
    assert brave_freshness(3, today) == "2024-06-27to2024-06-30"  # Brave takes an exact range


async def test_searxng_json_api(site, client):
    site.add("/search", handler=lambda request: Route.json({"results": [
        {"url": "https://a.example/1", "title": "First", "content": "About one", "publishedDate": "2024-05-01T10:00:00Z"},
        {"url": "https://a.example/1", "title": "Duplicate", "content": "same url"},
        {"url": "https://b.example/2", "title": "", "content": "No title"},
        {"title": "no url"},
    ]}))
    results = await SearXNG(site.origin + "/").search(client, "glm agent", recency_days=7)
    query = site.requests[0].query
    assert query == {"q": ["glm agent"], "format": ["json"], "time_range": ["week"]}
    assert [(r.url, r.title, r.snippet, r.published) for r in results] == [
        ("https://a.example/1", "First", "About one", "2024-05-01"),
        ("https://b.example/2", "https://b.example/2", "No title", None),
    ]


async def test_searxng_without_json_format_says_how_to_enable_it(site, client):
    site.add("/search", "Forbidden", status=403)
    with pytest.raises(SearchError, match="enable the json format"):
        await SearXNG(site.origin).search(client, "x")


DDG_PAGE = """<html><body><div id="links" class="results">
<div class="result results_links results_links_deep result--ad"><div class="links_main">
  <h2 class="result__title"><a class="result__a" href="https://duckduckgo.com/y.js?ad_provider=x">Buy now</a></h2>
  <a class="result__snippet">An advert</a></div></div>
<div class="result results_links results_links_deep web-result"><div class="links_main links_deep result__body">
  <h2 class="result__title"><a rel="nofollow" class="result__a"
     href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fen.wikipedia.org%2Fwiki%2FGLM&amp;rut=abc">GLM <b>model</b> - Wikipedia</a></h2>
  <a class="result__snippet" href="//duckduckgo.com/l/?uddg=x">GLM is a family of <b>language</b> models.</a></div></div>
<div class="result results_links results_links_deep web-result"><div class="links_main links_deep result__body">
  <h2 class="result__title"><a rel="nofollow" class="result__a" href="https://github.com/THUDM/GLM-4">THUDM/GLM-4</a></h2>
  <a class="result__snippet">GLM-4 series models.</a></div></div>
</div></body></html>"""

DDG_CAPTCHA = """<html><body><div class="anomaly-modal__mask"><div class="anomaly-modal__modal">
<p>Unfortunately, bots use DuckDuckGo too.</p><form id="challenge-form" action="//duckduckgo.com/anomaly.js">
</form></div></div></body></html>"""


async def test_duckduckgo_html_results(site, client):
    site.add("/html/", handler=lambda request: Route(DDG_PAGE))
    results = await DuckDuckGo(endpoint=site.url("/html/")).search(client, "glm-4", recency_days=30)
    request = site.requests[0]
    assert request.method == "POST" and request.form() == {"q": ["glm-4"], "df": ["m"]}
    assert [(r.title, r.url, r.snippet) for r in results] == [
        ("GLM model - Wikipedia", "https://en.wikipedia.org/wiki/GLM", "GLM is a family of language models."),
        ("THUDM/GLM-4", "https://github.com/THUDM/GLM-4", "GLM-4 series models."),
    ]


@pytest.mark.parametrize("status", [200, 202])
async def test_duckduckgo_captcha_is_detected(site, client, status):
    site.add("/html/", DDG_CAPTCHA, status=status)
    with pytest.raises(SearchError, match="DuckDuckGo answered with a CAPTCHA"):
        await DuckDuckGo(endpoint=site.url("/html/")).search(client, "anything")


async def test_brave_request_and_response(site, client):
    site.add("/res/v1/web/search", handler=lambda request: Route.json({"web": {"results": [
        {"title": "Brave result", "url": "https://c.example/", "description": "With <strong>bold</strong> words",
         "age": "2 days ago"}]}}))
    backend = Brave(endpoint=site.url("/res/v1/web/search"), api_key="brave-key")
    results = await backend.search(client, "q", recency_days=7, count=5)
    request = site.requests[0]
    assert request.headers["X-Subscription-Token"] == "brave-key"
    assert request.query == {"q": ["q"], "count": ["5"], "freshness": ["pw"]}
    assert results[0].snippet == "With bold words" and results[0].published == "2 days ago"


async def test_tavily_request_and_response(site, client):
    site.add("/search", handler=lambda request: Route.json({"results": [
        {"title": "Tavily result", "url": "https://d.example/", "content": "Snippet", "score": 0.9}]}))
    results = await Tavily(endpoint=site.url("/search"), api_key="tvly-key").search(client, "q", recency_days=1, count=3)
    request = site.requests[0]
    assert request.headers["Authorization"] == "Bearer tvly-key"
    assert request.json() == {"query": "q", "max_results": 3, "search_depth": "basic", "time_range": "day"}
    assert [(r.title, r.url, r.snippet) for r in results] == [("Tavily result", "https://d.example/", "Snippet")]


async def test_zhipu_request_and_response(site, client):
    site.add("/api/paas/v4/web_search", handler=lambda request: Route.json({"id": "x", "search_result": [
        {"title": "智谱结果", "link": "https://e.example/", "content": "摘要", "media": "e", "publish_date": "2024-06-01"}]}))
    backend = Zhipu(endpoint=site.url("/api/paas/v4/web_search"), api_key="zhipu-key")
    results = await backend.search(client, "天气", recency_days=30, count=10)
    request = site.requests[0]
    assert request.headers["Authorization"] == "Bearer zhipu-key"
    assert request.json() == {"search_query": "天气", "search_engine": "search_std", "count": 10,
                              "search_recency_filter": "oneMonth"}
    assert [(r.title, r.url, r.published) for r in results] == [("智谱结果", "https://e.example/", "2024-06-01")]


async def test_a_refused_key_names_the_variable(site, client):
    site.add("/search", "unauthorized", status=401)
    with pytest.raises(SearchError, match=r"Tavily refused the request \(HTTP 401\); check TAVILY_API_KEY"):
        await Tavily(endpoint=site.url("/search"), api_key="bad").search(client, "q")


async def test_search_retries_transient_errors(site, client):
    answers = iter([Route("busy", status=503), Route.json({"results": [{"url": "https://f.example/", "title": "F"}]})])
    site.add("/search", handler=lambda request: next(answers))
    results = await SearXNG(site.origin).search(client, "q")
    assert [r.url for r in results] == ["https://f.example/"] and site.hits["/search"] == 2



async def test_search_retries_as_many_times_as_it_is_told(site, client):
    site.add("/search", "busy", status=503)
    with pytest.raises(SearchError, match=r"answered HTTP 503"):
        await SearXNG(site.origin).search(client, "q", retrying=RetryPolicy(retries=0))
    assert site.hits["/search"] == 1  # the browser passes its [browser] retries here

def test_backend_from_settings_explains_what_is_missing():
    with pytest.raises(SearchError, match="searxng_url is not set"):
        backend_from_settings(BrowserSettings(search_backend="searxng"), environ={})
    for name, variable in (("brave", "BRAVE_API_KEY"), ("tavily", "TAVILY_API_KEY"), ("zhipu", "ZHIPUAI_API_KEY")):
        with pytest.raises(SearchError, match=f"environment variable {variable} is not set"):
            backend_from_settings(BrowserSettings(search_backend=name), environ={})


def test_backend_from_settings_reads_keys_and_endpoints():
    brave = backend_from_settings(BrowserSettings(search_backend="brave"), environ={"BRAVE_API_KEY": "k"})
    assert isinstance(brave, Brave) and brave.api_key == "k" and brave.endpoint.startswith("https://api.search.brave.com")
    zhipu = backend_from_settings(BrowserSettings(search_backend="zhipu", search_endpoint="http://proxy.local/ws"),
                                  environ={"ZHIPU_API_KEY": "z"})
    assert isinstance(zhipu, Zhipu) and zhipu.endpoint == "http://proxy.local/ws" and zhipu.api_key == "z"
    searx = backend_from_settings(BrowserSettings(search_backend="searxng", searxng_url="http://localhost:8888"))
    assert isinstance(searx, SearXNG) and searx.endpoint == "http://localhost:8888/search"
    assert isinstance(backend_from_settings(BrowserSettings()), DuckDuckGo)  # the default needs nothing
