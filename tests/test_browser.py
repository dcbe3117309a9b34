"""The simple_browser tool: search, mclick and open_url on a loopback site, through the registry and an agent."""

import pytest

from agent import Agent
from agent.messages import ToolCall
from agent.models import ScriptedModel
from agent.policy import Policy
from agent.registry import ToolRegistry
from agent.tool import ToolContext
from tools.browser import BrowserTool
from tools.browser.settings import BrowserSettings
from tools.browser.testing import LocalSite, Route

ARTICLES = {
    "/solar": ("Solar power in 2024", "Solar capacity grew by 30 percent in 2024, led by new utility-scale farms."),
    "/wind": ("Wind power report", "Offshore wind output doubled, according to the grid operator's annual report."),
    "/hydro": ("Hydro outlook", "Hydro generation fell slightly because of a dry summer in the north."),
}


def page(title: str, text: str, extra: str = "") -> str:
    return (f"<html><head><title>{title}</title></head><body><nav><a href='/'>Home</a> <a href='/about'>About</a></nav>"
            f"<article><h1>{title}</h1><p>{text}</p>{extra}</article><footer>Footer text</footer></body></html>")


@pytest.fixture
def site():
    with LocalSite() as server:
        for path, (title, text) in ARTICLES.items():
            server.add(path, page(title, text, f'<p>See <a href="/wind">the wind report</a> for more on {title}.</p>'))
        server.add("/broken", "oops", status=500)
        server.add("/long", page("Long read", " ".join(f"Sentence number {i} of the long read." for i in range(600))))
        server.add("/search", handler=lambda request: Route.json({"results": [
            {"url": server.url(path), "title": title, "content": text[:40]}
            for path, (title, text) in ARTICLES.items() if request.query["q"][0].split()[0] in ("energy", title.split()[0].lower())
        ] + ([{"url": server.url("/broken"), "title": "Broken page", "content": "fails"}]
             if request.query["q"][0] == "energy" else [])}))
        yield server


def policy_for(site: LocalSite, **browser) -> Policy:
    settings = {"allow_private_network": True, "respect_robots": False, "search_backend": "searxng",
                "searxng_url": site.origin, "retries": 0, "window_chars": 2000, **browser}
    return Policy(browser=BrowserSettings(**settings))


@pytest.fixture
async def context(site, tmp_path):
    ctx = ToolContext(run_id="t", artifacts_dir=tmp_path, policy=policy_for(site))
    yield ctx
    await ctx.resources.aclose()


async def call(tool: BrowserTool, body: str, context: ToolContext):
    return await tool.forward(**tool.parse_body(body), context=context)


async def test_search_lists_numbered_results_as_glm4_reads_them(site, context):
    tool = BrowserTool()
    out = await call(tool, 'search("energy", recency_days=7)', context)
    assert out.metadata == "browser_result" and not out.is_error
    assert out.text.splitlines()[:2] == [" # 【0†Solar power in 2024†127.0.0.1】", "Solar capacity grew by 30 percent in 202"]
    assert out.text.endswith("Visible: 0% - 100%")
    assert [(c.id, c.url) for c in out.citations] == [
        ("0", site.url("/solar")), ("1", site.url("/wind")), ("2", site.url("/hydro")), ("3", site.url("/broken"))]
    assert site.requests[0].query["time_range"] == ["week"]


async def test_ids_are_unique_across_searches(site, context):
    tool = BrowserTool()
    await call(tool, 'search("energy")', context)
    again = await call(tool, 'search("solar")', context)
    assert [c.id for c in again.citations] == ["0"]  # the same page keeps its id
    site.add("/new", page("New", "new"))
    site.routes["/search"] = Route(handler=lambda request: Route.json({"results": [{"url": site.url("/new"), "title": "New"}]}))
    newer = await call(tool, 'search("new")', context)
    assert newer.text.startswith(" # 【4†New†") and newer.citations[0].id == "4"  # numbering goes on


async def test_mclick_quotes_each_page_and_reports_failures(site, context):
    tool = BrowserTool()
    await call(tool, 'search("energy")', context)
    outputs = await call(tool, "mclick([0, 1, 3, 42])", context)
    assert [o.metadata for o in outputs] == ["quote_result [0†source]", "quote_result [1†source]", "system_error", "system_error"]
    solar, wind, broken, unknown = outputs
    assert wind.text.startswith("# Wind power report\nOffshore wind output doubled")
    assert solar.text.startswith("# Solar power in 2024\nSolar capacity grew by 30 percent")
    assert "Home" not in solar.text and "Footer" not in solar.text
    assert solar.citations[0].model_dump() == {"id": "0", "url": site.url("/solar"), "title": "Solar power in 2024"}
    assert "【1†the wind report】" in solar.text  # a link to a known page reuses its id
    assert broken.is_error and "HTTP 500" in broken.text and "【3†Broken page】" in broken.text
    assert unknown.is_error and "There is no result 42" in unknown.text


async def test_mclick_fetches_each_page_once(site, context):
    tool = BrowserTool()
    await call(tool, 'search("energy")', context)
    await call(tool, "mclick([0, 0, 1])", context)
    await call(tool, "mclick([1, 2])", context)
    await call(tool, f'open_url("{site.url("/solar")}")', context)
    assert [site.hits[p] for p in ("/solar", "/wind", "/hydro")] == [1, 1, 1]  # the per-session cache


async def test_mclick_on_a_page_link(site, context):
    tool = BrowserTool()
    first = await call(tool, f'open_url("{site.url("/hydro")}")', context)
    assert first.text.startswith(" # 【0†Hydro outlook†127.0.0.1】\nURL: ")
    link_id = next(c.id for c in first.citations if c.url == site.url("/wind"))
    [quote] = await call(tool, f"mclick([{link_id}])", context)
    assert quote.metadata == f"quote_result [{link_id}†source]" and "Offshore wind output doubled" in quote.text


async def test_open_url_scrolls_a_long_page(site, context):
    tool = BrowserTool()
    first = await call(tool, f'open_url("{site.url("/long")}")', context)
    assert first.metadata == "browser_result" and "L0: Sentence number 0 of the long read." in first.text
    note = first.text.splitlines()[-1]
    assert note.startswith("Visible: lines 0-") and f'open_url("{site.url("/long")}", cursor=' in note
    cursor = int(note.rsplit("cursor=", 1)[1].rstrip(")."))
    second = await call(tool, f'open_url("{site.url("/long")}", cursor={cursor})', context)
    assert f"L{cursor}: " in second.text and "L0: " not in second.text
    with pytest.raises(Exception, match="outside the page"):
        await call(tool, f'open_url("{site.url("/long")}", cursor=99999)', context)
    assert site.hits["/long"] == 1


async def test_progress_is_reported_for_mclick(site, context):
    seen = []
    context.on_progress = lambda tool, message, fraction: seen.append((tool, message, fraction))
    tool = BrowserTool()
    await call(tool, 'search("energy")', context)
    await call(tool, "mclick([0, 1])", context)
    assert seen[-1] == ("simple_browser", "opened 2/2 pages", 1.0)


# ---------------------------------------------------------------------------------------------------
# Through the registry, as the loop calls it


async def test_registry_glm4_and_json_calls(site, context):
    registry = ToolRegistry(["simple_browser"], policy=context.policy)
    search = await registry.call(ToolCall(id="1", name="simple_browser", body='search("energy")'), context)
    assert search.metadata == "browser_result" and len(search.citations) == 4
    clicked = await registry.call(ToolCall(id="2", name="simple_browser", body='{"action": "mclick", "ids": [0, 2]}',
                                           syntax="json"), context)
    assert [p.metadata for p in clicked.parts] == ["quote_result [0†source]", "quote_result [2†source]"]
    assert not clicked.is_error and "Hydro generation fell" in clicked.content


async def test_registry_turns_mistakes_into_observations(site, context):
    registry = ToolRegistry(["simple_browser"], policy=context.policy)
    bad = await registry.call(ToolCall(id="1", name="simple_browser", body="search(energy)"), context)
    assert bad.is_error and "must be literals" in bad.content and 'search("query", recency_days=7)' in bad.content
    empty = await registry.call(ToolCall(id="2", name="simple_browser", body="mclick([])"), context)
    assert empty.is_error and "simple_browser failed: mclick needs the ids" in empty.content


async def test_an_unconfigured_backend_is_a_clear_observation(tmp_path):
    ctx = ToolContext(run_id="t", artifacts_dir=tmp_path, policy=Policy(browser=BrowserSettings(search_backend="searxng")))
    observation = await ToolRegistry(["simple_browser"], policy=ctx.policy).call(
        ToolCall(id="1", name="simple_browser", body='search("x")'), ctx)
    assert observation.is_error and "searxng_url is not set" in observation.content
    await ctx.resources.aclose()


async def test_private_network_is_off_by_default(site, tmp_path):
    ctx = ToolContext(run_id="t", artifacts_dir=tmp_path, policy=Policy())
    observation = await ToolRegistry(["simple_browser"], policy=ctx.policy).call(
        ToolCall(id="1", name="simple_browser", body=f'open_url("{site.url("/solar")}")'), ctx)
    assert observation.is_error and "127.0.0.1 is a loopback address" in observation.content
    assert site.hits["/solar"] == 0
    await ctx.resources.aclose()


# ---------------------------------------------------------------------------------------------------
# A whole agent run


def test_agent_searches_mclicks_and_cites(site):
    def script(messages, tools):
        turn = sum(1 for m in messages if m.role == "assistant")
        if turn == 0:
            return 'simple_browser\nsearch("energy report", recency_days=365)'
        if turn == 1:
            shown = messages[-1].content
            assert "【0†Solar power in 2024†" in shown and "【2†Hydro outlook†" in shown
            return "simple_browser\nmclick([0, 2])"
        quotes = [m for m in messages if m.role == "observation"][-2:]
        assert [q.metadata for q in quotes] == ["quote_result [0†source]", "quote_result [2†source]"]
        return ("\nSolar capacity grew by 30 percent【0†source】, while hydro generation fell slightly "
                "after a dry summer【2†source】.")

    agent = Agent(model=ScriptedModel(script), tools=["simple_browser"], policy=policy_for(site))
    result = agent.run("How did solar and hydro power do in 2024?")
    assert result.status == "answered"
    assert [(c.id, c.url, c.title) for c in result.citations] == [
        ("0", site.url("/solar"), "Solar power in 2024"), ("2", site.url("/hydro"), "Hydro outlook")]
    assert site.hits["/solar"] == 1 and site.hits["/hydro"] == 1 and site.hits["/wind"] == 0
