"""Tools from MCP servers: real servers written with the SDK (tests/mcp_servers.py) over stdio, streamable
HTTP and SSE on loopback, called by the agent as the fake served GLM-4 asks; policy keys, the JSON config of
desktop clients, the naming rule, and failures as sentences."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import Agent, Policy
from agent.errors import PolicyError, ToolDefinitionError
from agent.mcp import MCPServerSettings, load_mcp_config, tool_name
from agent.models import OpenAIChatModel
from agent.policy import load_policy
from test_cli import agent_cli

SERVERS = Path(__file__).resolve().parent / "mcp_servers.py"
SECRET = "tok-5f0e-a11ce"  # given to servers through ${MCP_TEST_TOKEN}; it must never be shown


def stdio(*args: str, **settings) -> dict:
    """A [mcp.servers.NAME] table that starts tests/mcp_servers.py with ``args`` over stdio."""
    return {"command": sys.executable, "args": [str(SERVERS), *args], **settings}


def agent_for(fake_server, servers: dict, **agent) -> Agent:
    """An agent on the fake served GLM-4 (chat API, native tool calls) whose only tools are ``servers``'."""
    policy = Policy(tools={"enabled": []}, mcp={"servers": servers})
    return Agent(model=OpenAIChatModel(fake_server.url, fake_server.model), tools=[], policy=policy, **agent)


def observations(result) -> list:
    return [o for step in result.steps for o in step.observations]


@pytest.fixture
def web_server():
    """tests/mcp_servers.py serving streamable HTTP (or SSE: ``web_server("sse")``) on a loopback port."""
    started = []

    def start(mode: str = "http") -> str:
        proc = subprocess.Popen([sys.executable, str(SERVERS), mode], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        started.append(proc)
        url = proc.stdout.readline().split()[1]
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # listening once a connection is accepted
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return url
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the test MCP server did not listen at {url}")

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(10)


# -- tools over stdio, as the model calls them ----------------------------------------------------------

@pytest.mark.slow
def test_stdio_server_tools_answer_with_text_images_resources_and_errors(fake_server):
    fake_server.script(['demo__echo\n{"text": "hello"}', 'demo__image\n{"color": "blue"}', "demo__note\n{}",
                        'demo__fail\n{"why": "no cheese"}', "\nAll done."])
    agent = agent_for(fake_server, {"demo": stdio()})
    try:
        result = agent.run("Use the demo tools")
    finally:
        agent.close()
    assert result.status == "answered" and result.answer == "All done.", result.error
    sent = {tool["function"]["name"]: tool["function"] for tool in fake_server.posts[0].body["tools"]}
    assert sent["demo__add"]["parameters"]["properties"] == {"a": {"title": "A", "type": "integer"},
                                                             "b": {"title": "B", "type": "integer"}}
    assert sent["demo__add"]["description"] == "Add two integers."
    assert "demo__dotted_name" in sent  # 'dotted.name': a character GLM-4 names cannot hold, replaced
    echo, image, note, fail = observations(result)
    assert (echo.content, echo.is_error) == ("hello", False)
    assert fake_server.posts[1].body["messages"][-1]["content"] == "hello"  # what the model read
    (png,) = image.artifacts
    assert png.kind == "image" and png.path.read_bytes().startswith(b"\x89PNG") and png.path.name in image.content
    assert "[resource memo://note]\nBuy milk." in note.content and "[link: all notes <https://example.org/notes>]" \
        in note.content
    (pdf,) = note.artifacts
    assert pdf.kind == "file" and pdf.path.suffix == ".pdf" and pdf.path.read_bytes() == b"%PDF-1.4 not really"
    assert fail.is_error and "cannot: no cheese" in fail.content
    assert {a.path for a in result.artifacts} == {png.path, pdf.path}


@pytest.mark.slow
def test_a_server_that_crashes_mid_call_or_never_answers_is_an_error_observation(fake_server):
    fake_server.script(["demo__crash\n{}", 'demo__echo\n{"text": "back again"}', "demo__hang\n{}",
                        "\nThe server is flaky."])
    agent = agent_for(fake_server, {"demo": stdio(timeout_s=3)})
    started = time.monotonic()
    try:
        result = agent.run("Try the demo server")
    finally:
        agent.close()
    elapsed = time.monotonic() - started
    assert result.status == "answered" and result.answer == "The server is flaky.", result.error
    crash, echo, hang = observations(result)
    assert crash.is_error and "The MCP server 'demo' did not answer the call to 'crash': it closed the connection" \
        in crash.content
    assert "out of cheese" in crash.content  # the last words it wrote on stderr
    assert "started again" in crash.content
    assert echo.content == "back again" and not echo.is_error  # the next call started it again
    assert hang.is_error and "did not answer the call to 'hang' within 3 s" in hang.content
    assert elapsed < 60, elapsed  # starts (twice), the 3 s wait, model turns: never a hang


# -- remote servers, secrets, the desktop JSON config, the CLI ------------------------------------------

@pytest.mark.slow
def test_http_and_stdio_servers_from_a_json_config_keep_secrets_out_of_everything(fake_server, web_server, tmp_path):
    url = web_server("http")
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {
        "web": {"type": "http", "url": url, "headers": {"X-Token": "Bearer ${MCP_TEST_TOKEN}"}},
        "local": {"command": sys.executable, "args": [str(SERVERS)], "env": {"TOKEN": "${MCP_TEST_TOKEN}"}},
        "off": {"command": "not-started", "disabled": True}}}))
    fake_server.script(['web__header\n{"name": "X-Token"}', 'local__env\n{"name": "TOKEN"}',
                        'web__add\n{"a": 2, "b": 3}', "\nBoth servers answered."])
    transcript = tmp_path / "run.jsonl"
    proc = agent_cli("run", "Check the servers", "--base-url", fake_server.url, "--model", fake_server.model,
                     "--backend", "completions", "--tools", "none", "--mcp-config", str(config), "--json",
                     "--transcript", str(transcript), env={"MCP_TEST_TOKEN": SECRET})
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    results = [e["observation"] for e in events if e["type"] == "tool_result"]
    assert [r["content"] for r in results] == ["Bearer ***", "***", "5"]  # sent, and hidden when said back
    assert events[-1]["result"]["answer"] == "Both servers answered."
    assert "web__add" in events[0]["tools"] and "local__echo" in events[0]["tools"]
    prompt = fake_server.posts[0].prompt  # the GLM-4 prompt the served model got
    assert "web__header" in prompt and "local__env" in prompt and "off__" not in prompt
    for text in (proc.stdout, proc.stderr, transcript.read_text(), *(p.prompt for p in fake_server.posts)):
        assert SECRET not in text


@pytest.mark.slow
def test_sse_server(fake_server, web_server):
    url = web_server("sse")
    fake_server.script(['sse__add\n{"a": 20, "b": 22}', "\n42."])
    agent = agent_for(fake_server, {"sse": {"url": url, "tools": ["add"]}})
    try:
        result = agent.run("Add")
    finally:
        agent.close()
    assert result.answer == "42." and observations(result)[0].content == "42"
    assert [t["function"]["name"] for t in fake_server.posts[0].body["tools"]] == ["sse__add"]


@pytest.mark.slow
def test_chat_sessions_each_start_the_server(fake_server, tmp_path):
    """`agent chat`: the server lives as long as the conversation; /new starts a fresh one."""
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"demo": {"command": sys.executable, "args": [str(SERVERS)],
                                                          "tools": ["count"]}}}))
    fake_server.script(["demo__count\n{}", "\nOnce.", "demo__count\n{}", "\nTwice.", "demo__count\n{}",
                        "\nOnce again."])
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "chat", "--base-url", fake_server.url, "--model", fake_server.model,
         "--tools", "none", "--backend", "completions", "--mcp-config", str(config)],
        input="Count\nCount\n/new\nCount\n/exit\n", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "tools: demo__count" in proc.stdout and "Once again." in proc.stdout
    observed = [post.prompt.rsplit("<|observation|>\n", 1)[1].split("<|assistant|>")[0]
                for post in fake_server.posts if post.prompt.endswith("<|observation|>\n1<|assistant|>")
                or post.prompt.endswith("<|observation|>\n2<|assistant|>")]
    assert observed == ["1", "2", "1"]


@pytest.mark.slow
def test_agent_tools_lists_mcp_tools_with_their_server(tmp_path):
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"demo": {"command": sys.executable, "args": [str(SERVERS)]}}}))
    proc = agent_cli("tools", "--tools", "python", "--mcp-config", str(config), "--json")
    assert proc.returncode == 0, proc.stderr
    listed = {tool["name"]: tool for tool in json.loads(proc.stdout)}
    assert listed["demo__echo"]["mcp_server"] == "demo" and "mcp_server" not in listed["python"]
    assert listed["demo__echo"]["parameters"]["required"] == ["text"]
    table = agent_cli("tools", "--tools", "none", "--mcp-config", str(config))
    assert table.returncode == 0, table.stderr
    assert "demo__image" in table.stdout and "MCP: demo" in table.stdout


@pytest.mark.slow
def test_servers_that_cannot_start_are_one_line_at_start(fake_server, tmp_path):
    cases = {
        "missing": ({"command": "no-such-mcp-server-xyz"}, "its command 'no-such-mcp-server-xyz' was not found"),
        "junk": (stdio("garbage", startup_timeout_s=3),
                 "it wrote what is not MCP: 'hello from a program that is not an MCP server'"),
        "gone": ({"url": "http://127.0.0.1:9/mcp"}, "http://127.0.0.1:9/mcp cannot be reached"),
    }
    for name, (server, message) in cases.items():
        config = tmp_path / f"{name}.json"
        config.write_text(json.dumps({"mcpServers": {name: server}}))
        proc = agent_cli("run", "Hi", "--base-url", fake_server.url, "--model", fake_server.model, "--tools", "none",
                         "--mcp-config", str(config))
        assert proc.returncode == 1, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith(f"error: The MCP server {name!r} did not start: ") and message in line, line
        assert "Traceback" not in proc.stdout + proc.stderr
    assert not fake_server.posts  # nothing reached the model


def test_a_server_that_cannot_start_ends_a_lazy_run_with_an_error(fake_server):
    agent = agent_for(fake_server, {"missing": {"command": "no-such-mcp-server-xyz"}})
    try:
        result = agent.run("Hi")  # not started ahead: the server starts before the first turn
    finally:
        agent.close()
    assert result.status == "error" and "The MCP server 'missing' did not start" in result.error
    assert not fake_server.posts


@pytest.mark.slow
def test_allow_list_and_approval(fake_server):
    fake_server.script(['demo__add\n{"a": 1, "b": 2}', 'demo__echo\n{"text": "ok"}', "\nDone."])
    agent = agent_for(fake_server, {"demo": stdio(tools=["echo", "add"], require_approval=["add"])})
    try:
        result = agent.run("Add, then echo")
    finally:
        agent.close()
    assert [t["function"]["name"] for t in fake_server.posts[0].body["tools"]] == ["demo__echo", "demo__add"]
    add, echo = observations(result)
    assert add.is_error and "need the user's approval" in add.content and echo.content == "ok"
    agent = agent_for(fake_server, {"demo": stdio(tools=["echo", "ecko"])})
    try:
        with pytest.raises(ToolDefinitionError, match=r"\[mcp.servers.demo\] tools names 'ecko', which the server "
                                                       r"does not offer \(it offers: echo, add, count"):
            agent.start()
    finally:
        agent.close()


# -- settings, the JSON config, names (no server started) -----------------------------------------------

@pytest.mark.parametrize("server, message", [
    ({"command": "x", "url": "http://h/mcp"}, "[mcp.servers.s] has both command and url: give command (and args)"),
    ({"args": ["a"]}, "[mcp.servers.s] has neither command nor url"),
    ({"url": "http://h/mcp", "env": {"A": "1"}}, "sets args, env or cwd, which only a server started by command"),
    ({"command": "x", "headers": {"A": "1"}}, "sets headers or transport, which only a server reached by url"),
    ({"url": "ftp://h/mcp"}, "is not an http:// or https:// address"),
    ({"command": "x", "env": {"A": "${not a name}"}}, "is not a variable name"),
])
def test_bad_servers_are_policy_errors(tmp_path, server, message):
    with pytest.raises(PolicyError) as info:
        Policy(mcp={"servers": {"s": server}})
    assert message in str(info.value)


def test_policy_keys_and_server_names(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[mcp.servers.files]\ncommand = "mcp-files"\nargs = ["/data"]\ntools = ["read"]\n'
                    'require_approval = true\ntimeout_s = 5\n[mcp.servers.files.env]\nKEY = "${FILES_KEY}"\n'
                    '[mcp.servers.remote]\nurl = "https://example.org/sse"\n')
    servers = load_policy(path).mcp.servers
    assert servers["files"].kind == "stdio" and servers["files"].env == {"KEY": "${FILES_KEY}"}  # read at start
    assert servers["files"].require_approval is True and servers["files"].timeout_s == 5
    assert servers["remote"].kind == "sse"
    for bad in ("a__b", "files_", "9lives", "my.server"):
        with pytest.raises(PolicyError, match="a server's name must start with a letter"):
            Policy(mcp={"servers": {bad: {"command": "x"}}})
    path.write_text('[mcp.servers.files]\ncomand = "mcp-files"\n')
    with pytest.raises(PolicyError, match="unknown key 'mcp.servers.files.comand'"):
        load_policy(path)
    path.write_text('[mcp.servers.files]\ncommand = "mcp-files"\nurl = "https://example.org/mcp"\n')
    with pytest.raises(PolicyError, match=r"^Policy file '.*p\.toml': \[mcp\.servers\.files\] has both command and url"):
        load_policy(path)


def test_desktop_json_config(tmp_path):
    path = tmp_path / "claude_desktop_config.json"
    path.write_text(json.dumps({"mcpServers": {
        "files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"],
                  "env": {"X": "1"}, "autoApprove": ["read_file"]},
        "remote": {"type": "streamable-http", "url": "https://example.org/mcp", "headers": {"A": "${B}"}},
        "events": {"transport": "sse", "url": "https://example.org/events"},
        "off": {"command": "x", "disabled": True}}}))
    servers = load_mcp_config(path)
    assert list(servers) == ["files", "remote", "events"]
    assert servers["files"] == MCPServerSettings(command="npx", args=["-y", "@modelcontextprotocol/server-filesystem",
                                                                      "/tmp"], env={"X": "1"})
    assert servers["remote"].kind == "http" and servers["events"].kind == "sse"
    for text, message in [("{", "is not valid JSON"), ('{"servers": {}}', 'has no "mcpServers" object'),
                          ('{"mcpServers": {"a": {"command": "x", "colour": 1}}}', "unknown key 'a.colour'"),
                          ('{"mcpServers": {"a": {"type": "ws", "url": "ws://h"}}}', "has type 'ws'")]:
        path.write_text(text)
        with pytest.raises(PolicyError, match=message):
            load_mcp_config(path)
    with pytest.raises(PolicyError, match="does not exist"):
        load_mcp_config(tmp_path / "missing.json")


def test_a_variable_that_is_not_set_is_said_before_anything_starts(fake_server, monkeypatch):
    monkeypatch.delenv("MCP_TEST_UNSET", raising=False)
    agent = agent_for(fake_server, {"demo": {"command": "x", "env": {"K": "${MCP_TEST_UNSET}"}}})
    try:
        with pytest.raises(PolicyError, match=r"\[mcp.servers.demo\] env uses \$\{MCP_TEST_UNSET\}, which is not "
                                              r"set: export MCP_TEST_UNSET=\.\.\."):
            agent.start()
    finally:
        agent.close()


def test_tool_names_are_valid_and_never_collide():
    from agent.tool import is_tool_name

    assert tool_name("files", "read_file") == "files__read_file"
    assert tool_name("gh", "search.issues/v2 (beta)") == "gh__search_issues_v2__beta_"
    first = tool_name("gh", "a.b")
    second = tool_name("gh", "a_b", taken={first})  # the same once cleaned: the second gets a hash of its name
    assert first == "gh__a_b" and second.startswith("gh__a_b_") and second != first
    long = tool_name("server", "x" * 100)
    assert len(long) == 64 and long.startswith("server__xxx") and long != tool_name("server", "x" * 99)
    assert all(is_tool_name(name) for name in (first, second, long, tool_name("s", "-weird-")))
    # a server's name has no '__' and no trailing '_': the first '__' always ends it
    assert tool_name("a", "b__c") != tool_name("a_b", "_c")
