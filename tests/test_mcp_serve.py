"""`agent mcp serve`: the SDK's own client drives this project's tools over stdio and streamable HTTP (real
processes, loopback), and in-process for the browser, cogview, approval and protocol eras."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from agent import Policy, tool
from agent.mcp.server import ToolServer
from agent.registry import ToolRegistry
from test_cli import agent_cli
from tools.browser.testing import LocalSite, Route

TOKEN = "bearer-7d1c-token"
SANDBOX = "[sandbox]\npool_size = 1\npreload = []\ntimeout_s = 30\n"  # a kernel that starts quickly


def text(result) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


@pytest.fixture
def serve_args(tmp_path, mytools):
    policy = tmp_path / "serve.toml"
    policy.write_text(SANDBOX)
    return ["-m", "agent", "mcp", "serve", "--tools", "python", "--tools-module", str(mytools), "--policy", str(policy),
            "--runs-dir", str(tmp_path / "runs")]


@pytest.fixture
def mytools(tmp_path):
    from test_cli import MYTOOLS

    path = tmp_path / "mytools.py"
    path.write_text(MYTOOLS)
    return path


def child_env() -> dict[str, str]:
    """What the served process needs of ours (the SDK's stdio client passes only PATH, HOME and the like)."""
    names = ("PYTHONPATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "XDG_STATE_HOME")
    return {name: os.environ[name] for name in names if name in os.environ}


@pytest.mark.slow
async def test_stdio_sessions_each_keep_a_notebook_of_their_own(serve_args, tmp_path):
    server = StdioServerParameters(command=sys.executable, args=serve_args, env=child_env(), cwd=str(tmp_path))
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"python", "add"}
        assert tools["python"].input_schema["required"] == ["code"] and "notebook" in tools["python"].description
        assert tools["add"].input_schema["properties"]["a"]["type"] == "integer"
        first = await client.call_tool("python", {"code": "x = 41\nx + 1"})
        assert text(first) == "42" and not first.is_error
        plot = await client.call_tool("python", {"code": "import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\n"
                                                         "plt.show()\nx * 2"})
        (image,) = [block for block in plot.content if block.type == "image"]
        assert image.mime_type == "image/png" and base64.b64decode(image.data).startswith(b"\x89PNG")
        assert text(plot).startswith("82")
        assert text(await client.call_tool("add", {"a": 2, "b": 3})) == "5"
        wrong = await client.call_tool("add", {"a": "two", "b": 3})
        assert wrong.is_error and "Invalid arguments for 'add'" in text(wrong)
    async with Client(server) as client:  # a new session: a new notebook
        again = await client.call_tool("python", {"code": "x"})
        assert again.is_error and "NameError: name 'x' is not defined" in text(again)


@pytest.mark.slow
async def test_http_needs_the_token_and_keeps_a_notebook_per_session(serve_args, tmp_path):
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, *serve_args, "--http", "--port", "0"], stderr=stderr, cwd=tmp_path,
                                env={**os.environ, "AGENT_MCP_TOKEN": TOKEN})
    try:
        deadline = time.monotonic() + 60
        while "serving" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        line = log.read_text().splitlines()[0]
        assert line.startswith("agent mcp: serving python, add at http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1]
        refused = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                             headers={"Accept": "application/json, text/event-stream"})
        assert refused.status_code == 401
        for session in range(2):
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"})
            async with http, Client(streamable_http_client(url, http_client=http)) as client:
                assert {t.name for t in (await client.list_tools()).tools} == {"python", "add"}
                if session == 0:
                    assert text(await client.call_tool("python", {"code": "y = 5"})) == "(no output)"
                    assert text(await client.call_tool("python", {"code": "y * 2"})) == "10"
                else:
                    again = await client.call_tool("python", {"code": "y"})
                    assert again.is_error and "NameError" in text(again)
        # and this project's own client, with the token from the environment, and without it
        config = tmp_path / "ours.json"
        config.write_text(json.dumps({"mcpServers": {"ours": {"url": url, "headers": {
            "Authorization": "Bearer ${OURS_TOKEN}"}}}}))
        listed = agent_cli("tools", "--tools", "none", "--mcp-config", str(config), "--json",
                           env={"OURS_TOKEN": TOKEN})
        assert listed.returncode == 0, listed.stderr
        assert [(t["name"], t["mcp_server"]) for t in json.loads(listed.stdout)] == [("ours__python", "ours"),
                                                                                    ("ours__add", "ours")]
        wrong = agent_cli("tools", "--tools", "none", "--mcp-config", str(config), env={"OURS_TOKEN": "wrong"})
        assert wrong.returncode == 1 and "HTTP 401: the credentials were refused" in wrong.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0  # stopped as a server is: quietly, kernels closed
    assert "Traceback" not in log.read_text()


def test_serving_beyond_loopback_needs_a_token():
    proc = agent_cli("mcp", "serve", "--http", "--host", "0.0.0.0", "--tools", "none")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "--host 0.0.0.0 would let other machines run code in the sandbox: give a bearer token" in line
    proc = agent_cli("mcp", "serve", "--token", "x", "--tools", "none")
    assert proc.returncode == 2 and "only apply with --http" in proc.stderr


# -- in process: the SDK's client on the server object ---------------------------------------------------

def served(tools, policy: Policy, tmp_path, **options) -> tuple[ToolServer, ToolRegistry]:
    registry = ToolRegistry(tools, policy=policy)
    return ToolServer(registry, runs_dir=tmp_path / "runs", **options), registry


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def test_approval_unknown_tools_and_the_sessionless_era(tmp_path):
    policy = Policy(tools={"enabled": [], "require_approval": ["add"]})
    server, registry = served([add], policy, tmp_path)
    async with Client(server.server, mode="legacy") as client:
        refused = await client.call_tool("add", {"a": 1, "b": 2})
        assert refused.is_error and "started without --yes" in text(refused)
        with pytest.raises(MCPError, match="There is no tool named 'sub': this server has add"):
            await client.call_tool("sub", {})
    async with Client(server.server, mode="2026-07-28") as client:  # sessionless: no notebook could last
        with pytest.raises(MCPError, match="keeps a notebook per MCP session: connect with initialize"):
            await client.list_tools()
    approving, _ = served([add], policy, tmp_path, approve=True)
    async with Client(approving.server, mode="legacy") as client:  # (over stdio and HTTP, "auto" falls back to it)
        assert text(await client.call_tool("add", {"a": 1, "b": 2})) == "3"
    await registry.aclose()


async def test_browser_citations_come_back_as_links(tmp_path):
    with LocalSite() as site:
        site.add("/tea", "<html><head><title>Tea facts</title></head><body><p>Green tea is not oxidised.</p>"
                         "</body></html>")
        site.add("/search", handler=lambda request: Route.json({"results": [
            {"url": site.url("/tea"), "title": "Tea facts", "content": "Green tea"}]}))
        policy = Policy(tools={"enabled": ["simple_browser"]}, browser={
            "search_backend": "searxng", "searxng_url": site.origin, "allow_private_network": True,
            "respect_robots": False, "retries": 0})
        server, registry = served(["simple_browser"], policy, tmp_path)
        async with Client(server.server, mode="legacy") as client:
            found = await client.call_tool("simple_browser", {"action": "search", "query": "green tea"})
            opened = await client.call_tool("simple_browser", {"action": "mclick", "ids": [0]})
        await registry.aclose()
    assert "【0†Tea facts" in text(found)
    (link,) = [block for block in found.content if block.type == "resource_link"]
    assert (link.uri, link.name, link.description) == (site.url("/tea"), "Tea facts", "【0†source】")
    assert "Green tea is not oxidised." in text(opened)


@pytest.mark.slow
async def test_cogview_images_are_image_content(tmp_path):
    from tools.cogview.testing import save_tiny_stable_diffusion

    pipeline = save_tiny_stable_diffusion(tmp_path / "tiny-sd")
    policy = Policy(tools={"enabled": ["cogview"]}, cogview={"model": str(pipeline), "steps": 2})
    server, registry = served(["cogview"], policy, tmp_path)
    async with Client(server.server, mode="legacy") as client:
        drawn = await client.call_tool("cogview", {"prompt": "A red kite over green hills", "width": 64,
                                                   "height": 64, "seed": 7})
    await registry.aclose()
    assert not drawn.is_error and "CogView generated the image" in text(drawn)
    (image,) = [block for block in drawn.content if block.type == "image"]
    assert image.mime_type == "image/png" and base64.b64decode(image.data).startswith(b"\x89PNG")
