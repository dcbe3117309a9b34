"""GLM-4.6's tool-integrated-reasoning (TIR) names: a GLM-4.5+ model is shown ``simple_browser`` as
``browser.search``, ``browser.open`` and ``browser.find``, three functions on one browser session, against
the loopback site and search backend of the browser tests."""

import json
import re

import pytest

import test_browser
from test_browser import policy_for
from test_glm45_format import Replay  # a GLM-4.5 model replaying completions, keeping its prompts

from agent import Agent, tool
from agent.errors import ToolDefinitionError
from agent.messages import ToolCall
from agent.models import OpenAIChatModel, ScriptedModel
from agent.policy import Policy
from agent.protocol.glm4 import render_prompt
from agent.protocol.glm45 import GLM45
from agent.registry import ToolRegistry
from agent.tool import ToolContext
from tools.browser import BrowserSession

site = test_browser.site  # the browser tests' loopback news site: three articles and a search endpoint
TIR_BROWSER = ["browser.search", "browser.open", "browser.find"]


def call(name, **arguments):
    """A call as GLM-4.5 writes it, after a thought."""
    pairs = "".join(f"<arg_key>{key}</arg_key>\n<arg_value>{value}</arg_value>\n" for key, value in arguments.items())
    return f"\n<think>Next step.</think>\n<tool_call>{name}\n{pairs}</tool_call>"


def shown_tools(prompt):
    """The functions a GLM-4.5 prompt lists in <tools>, by name."""
    listing = prompt.split("<tools>\n", 1)[1].split("</tools>", 1)[0]
    return {entry["function"]["name"]: entry["function"] for entry in map(json.loads, listing.splitlines())}


def test_a_glm45_model_searches_opens_by_id_finds_and_cites(site):
    model = Replay([call("browser.search", query="energy", num=2), call("browser.open", id=0),
                    call("browser.find", pattern="WIND"),
                    "\n<think>Enough.</think>\nSolar capacity grew by 30 percent【0†source】; wind has a report of "
                    "its own【1†the wind report】."])
    agent = Agent(model=model, tools=["simple_browser", "python"], policy=policy_for(site))
    try:
        result = agent.run("How did solar power do in 2024?")
    finally:
        agent.close()
    assert result.status == "answered"
    tools = shown_tools(model.prompts[0])
    assert list(tools) == [*TIR_BROWSER, "python"]
    assert tools["browser.search"]["parameters"]["required"] == ["query"]
    assert tools["browser.open"]["parameters"]["properties"]["id"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert list(tools["python"]["parameters"]["properties"]) == ["code"]  # python stays python(code)

    search, opened, found = (step.observations[0] for step in result.steps[:3])
    assert search.content.splitlines() == [  # num=2: two of the four results
        " # 【0†Solar power in 2024†127.0.0.1】", "Solar capacity grew by 30 percent in 202",
        " # 【1†Wind power report†127.0.0.1】", "Offshore wind output doubled, according", "Visible: 0% - 100%"]
    assert opened.content.startswith(f" # 【0†Solar power in 2024†127.0.0.1】\nURL: {site.url('/solar')}\n")
    assert found.content == "\n".join([
        " # 【0†Solar power in 2024†127.0.0.1】",
        'Found "WIND" on 1 line of 2: line 1.',
        "L0: Solar capacity grew by 30 percent in 2024, led by new utility-scale farms.",
        "L1: See 【1†the wind report】 for more on Solar power in 2024.",
        "To read from a line, call browser.open(id=0, cursor=0)."])
    assert f"<|observation|>\n<tool_response>\n{found.content}\n</tool_response><|assistant|>" in model.prompts[3]
    assert not any(o.is_error for step in result.steps for o in step.observations)
    assert [(c.id, c.url) for c in result.citations] == [("0", site.url("/solar")), ("1", site.url("/wind"))]
    assert site.hits["/solar"] == 1 and site.hits["/wind"] == 0  # find reads the page already open


def parsed(name, **arguments):
    """The call GLM-4.5's reader makes of what the model wrote."""
    (one,) = GLM45.parse(call(name, **arguments), []).tool_calls
    return one


async def test_open_by_url_scroll_by_id_find_and_their_mistakes(site, tmp_path):
    context = ToolContext(run_id="t", artifacts_dir=tmp_path, policy=policy_for(site))
    registry = ToolRegistry(["simple_browser"], policy=context.policy, builtin_style="tir")
    try:
        nothing_open = await registry.call(parsed("browser.find", pattern="read"), context)
        assert nothing_open.is_error and "browser.find failed: No page is open yet" in nothing_open.content

        first = await registry.call(parsed("browser.open", id=site.url("/long")), context)
        assert first.content.startswith(" # 【0†Long read†127.0.0.1】\n") and "L0: Sentence number 0" in first.content
        cursor = int(re.search(r"To read on, call browser\.open\(id=0, cursor=(\d+)\)\.$", first.content).group(1))
        second = await registry.call(parsed("browser.open", id=0, cursor=cursor), context)
        assert f"L{cursor}: " in second.content and "L0: " not in second.content

        found = await registry.call(parsed("browser.find", pattern="sentence NUMBER 1"), context)
        lines = found.content.splitlines()
        assert lines[0] == " # 【0†Long read†127.0.0.1】"
        assert lines[1] == 'Found "sentence NUMBER 1" on 12 lines of 57; the first 2 are shown: lines 0, 1.'
        assert lines[2].startswith("L0: Sentence number 0") and lines[-1] == "To read from a line, call browser.open(id=0, cursor=0)."
        assert sum(len(line) for line in lines) < 2 * context.policy.browser.window_chars
        assert [c.id for c in found.citations] == ["0"]

        missing = await registry.call(parsed("browser.find", pattern="zebra"), context)
        assert not missing.is_error and missing.content == (
            f'No match: "zebra" is nowhere in 【0†Long read】 ({site.url("/long")}).')
        unknown = await registry.call(parsed("browser.open", id=42), context)
        assert unknown.is_error and "browser.open failed: There is no id 42" in unknown.content
        # a chat API's JSON arguments, with the id written as text
        again = await registry.call(ToolCall(id="j", name="browser.open", arguments={"id": "0"}, syntax="json"), context)
        assert again.content.startswith(" # 【0†Long read†127.0.0.1】")
        assert site.hits["/long"] == 1  # one session, one page cache
        assert [type(value) for value in context.state.values()] == [BrowserSession]
        assert set(context.state) == {"simple_browser"}
    finally:
        await context.resources.aclose()


def test_approval_of_simple_browser_covers_the_browser_functions(site):
    asked = []
    policy = policy_for(site).with_section("tools", require_approval=["simple_browser"])
    model = ScriptedModel([call("browser.open", id=site.url("/solar")), call("browser.open", id=site.url("/solar")),
                           "\n<think></think>\nSolar grew【0†source】."], chat_format=GLM45)
    agent = Agent(model=model, tools=["simple_browser"], policy=policy,
                  approve=lambda call: asked.append(call.name) or len(asked) > 1)  # no, then yes
    try:
        result = agent.run("Open the solar page")
    finally:
        agent.close()
    refused, allowed = (step.observations[0] for step in result.steps[:2])
    assert asked == ["browser.open", "browser.open"]
    assert refused.is_error and refused.content == "Not run: the user did not approve this call to 'browser.open'."
    assert not allowed.is_error and "Solar capacity grew" in allowed.content
    assert site.hits["/solar"] == 1
    assert [(c.id, c.url) for c in result.citations] == [("0", site.url("/solar"))]


def test_under_glm4_the_browser_keeps_its_all_tools_name(site):
    model = ScriptedModel(['simple_browser\nsearch("energy")', "\nSolar capacity grew【0†source】."])
    agent = Agent(model=model, tools=["simple_browser", "python"], policy=policy_for(site))
    try:
        result = agent.run("How did solar power do?")
    finally:
        agent.close()
    assert agent.tools.names == ["simple_browser", "python"]
    prompt = render_prompt(model.seen[0], agent.tools.specs())
    assert "\n## simple_browser\n\n你可以使用 `simple_browser` 工具" in prompt and "browser.search" not in prompt
    assert result.steps[0].observations[0].content.startswith(" # 【0†Solar power in 2024†127.0.0.1】")
    assert [(c.id, c.url) for c in result.citations] == [("0", site.url("/solar"))]


def test_the_names_follow_the_agents_model():
    agent = Agent(tools=["simple_browser", "python"])  # no model yet: the CLI sets it after making the agent
    try:
        assert agent.tools.names == ["simple_browser", "python"]
        agent.model = ScriptedModel([], chat_format=GLM45)
        assert agent.tools.names == [*TIR_BROWSER, "python"]
        assert [agent.tools.policy_name(name) for name in agent.tools.names] == ["simple_browser"] * 3 + ["python"]
        agent.model = ScriptedModel([])
        assert agent.tools.names == ["simple_browser", "python"]
    finally:
        agent.close()
    for enabled, names in ((["simple_browser", "python"], [*TIR_BROWSER, "python"]), (["python"], ["python"])):
        policy = Policy().with_section("tools", enabled=enabled)  # the policy's names cover the functions
        agent = Agent(model=ScriptedModel([], chat_format=GLM45), policy=policy)
        assert agent.tools.names == names
        agent.close()
    assert Replay([]).builtin_style == "tir" and ScriptedModel([]).builtin_style == "all_tools"
    assert OpenAIChatModel("http://127.0.0.1:9/v1", "m").builtin_style == "all_tools"
    assert OpenAIChatModel("http://127.0.0.1:9/v1", "m", chat_format=GLM45).builtin_style == "tir"


def test_a_tool_named_as_a_browser_function_clashes_only_under_tir():
    @tool(name="browser.search")
    def my_search(query: str) -> str:
        """My own search."""
        return query

    registry = ToolRegistry(["simple_browser", my_search])
    with pytest.raises(ToolDefinitionError, match=r"Two tools are named 'browser\.search' \(one is how "
                                                  r"'simple_browser' is shown to this model\)"):
        registry.builtin_style = "tir"
    assert registry.names == ["simple_browser", "browser.search"] and registry.builtin_style == "all_tools"
    with pytest.raises(ToolDefinitionError, match="Two tools are named 'browser.search'"):
        ToolRegistry(["simple_browser", my_search], builtin_style="tir")


async def test_a_chat_server_calls_the_browser_functions_with_json_arguments(fake_server, site):
    from fake_glm_server import Reply

    fake_server.script([Reply(tool_calls=[("browser.open", {"id": site.url("/hydro")})]),
                        Reply(tool_calls=[("browser.find", {"pattern": "dry summer"})]),
                        Reply(content="Hydro fell after a dry summer【0†Hydro outlook】.")])
    model = OpenAIChatModel(fake_server.url, fake_server.model, chat_format=GLM45)
    async with Agent(model=model, tools=["simple_browser"], policy=policy_for(site)) as agent:
        result = await agent.arun("How did hydro power do?")
    assert [entry["function"]["name"] for entry in fake_server.posts[0].body["tools"]] == TIR_BROWSER
    found = result.steps[1].observations[0]
    assert 'Found "dry summer" on 1 line of 2: line 0.' in found.content
    assert [(c.id, c.url) for c in result.citations] == [("0", site.url("/hydro"))]


def test_format_glm45_applies_to_the_chat_backend_too(fake_server):
    from test_cli import agent_cli

    fake_server.script(["\nHello."])
    proc = agent_cli("run", "hi", "--base-url", fake_server.url, "--model", fake_server.model, "--tools",
                     "simple_browser", "--format", "glm45")
    assert proc.returncode == 0, proc.stderr
    assert [entry["function"]["name"] for entry in fake_server.posts[0].body["tools"]] == TIR_BROWSER
    listing = agent_cli("tools", "--tools", "simple_browser", "--format", "glm45", "--json")
    assert listing.returncode == 0, listing.stderr
    assert [spec["name"] for spec in json.loads(listing.stdout)] == TIR_BROWSER
