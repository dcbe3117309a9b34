"""``agent serve``: the HTTP API, run in-process on loopback against the fake served GLM-4.

Real HTTP (httpx), real SSE, real kernels: a python call with a plot, an upload and a produced file,
an approval, a cancelled cell, every limit, one session walled off from another, the OpenAI facade,
and the token enforced when the CLI binds 0.0.0.0.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytest.importorskip("sse_starlette")  # the [serve] extra

from pathlib import Path  # noqa: E402

from agent import Agent
from agent.messages import Message
from agent.models import CompletionsModel, OpenAIChatModel
from agent.policy import Policy
from agent.serve import Limits
from fake_glm_server import FakeGLMServer
from tiny_glm import add  # a plain @tool: add(a, b)
from serve_fixtures import LiveServer, new_session, read_events, serve_app

PLOT = ("python\n```python\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [2, 4, 3])\nplt.title('t')\n"
        "plt.show()\nprint(17**13 % 1000)\n```")




def policy(**files) -> Policy:
    return Policy(sandbox=dict(pool_size=1, preload=[], timeout_s=30, interrupt_grace_s=1.0),
                  tools={"require_approval": ["add"]},
                  files={"max_files": 2, "max_file_mb": 0.05, "max_total_mb": 0.08, **files})


@pytest.fixture(scope="module")
def glm():
    with FakeGLMServer() as server:
        yield server


@pytest.fixture(scope="module")
def live(glm, tmp_path_factory):
    """One server with python and an ``add`` that needs approval, shared by the tests of the API."""
    agent = Agent(model=CompletionsModel(glm.url, glm.model), tools=["python", add], policy=policy(),
                  runs_dir=tmp_path_factory.mktemp("runs"))
    yield from serve_app(agent, limits=Limits(max_sessions=3))


@pytest.fixture
def client(live):
    with live.client() as client:
        yield client
        for session in list(live.app.state.manager.sessions):  # each test leaves the server empty
            client.delete(f"/api/sessions/{session}")


def types(events):
    return [event["type"] for event in events]


def test_a_run_with_python_and_a_plot_streams_every_step(client, glm):
    glm.script([PLOT, "\nThe answer is 937. See the plot."])
    sid = new_session(client)
    sent = client.post(f"/api/sessions/{sid}/messages", json={"text": "17**13 mod 1000, and plot something"})
    assert sent.status_code == 202
    events = read_events(client, sid)
    kinds = types(events)
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("artifact") < kinds.index("final_answer")
    assert "token" in kinds and "step_started" in kinds
    (call,) = [e for e in events if e["type"] == "tool_call"]
    assert call["call"]["name"] == "python" and "plt.plot" in call["call"]["body"]
    (result,) = [e for e in events if e["type"] == "tool_result"]
    assert result["observation"]["content"].startswith("937")
    (artifact,) = [e for e in events if e["type"] == "artifact"]
    assert artifact["kind"] == "image"
    assert events[-1]["result"]["answer"] == "The answer is 937. See the plot."
    image = client.get(artifact["url"])
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert image.headers["content-type"] == "image/png"
    assert "sandbox" in image.headers["content-security-policy"]
    listed = client.get(f"/api/sessions/{sid}/artifacts").json()["artifacts"]
    assert [a["id"] for a in listed] == [artifact["id"]]
    # a reader who comes late (or reconnects with Last-Event-ID) gets the rest, not the start again
    again = read_events(client, sid, after=len(events) - 3)
    assert types(again) == kinds[-2:]


def test_an_uploaded_csv_is_read_and_a_produced_file_downloads(client, glm):
    code = ("python\nimport pandas as pd\ndf = pd.read_csv('/mnt/data/data.csv')\n"
            "df.assign(total=df.a + df.b).to_csv('/mnt/data/totals.csv', index=False)\nprint(df.a.sum())")
    glm.script([code, "\nThe column a adds up to 4; totals.csv has the sums."])
    sid = new_session(client)
    sent = client.post(f"/api/sessions/{sid}/messages", data={"text": "Add the columns"},
                       files=[("files", ("data.csv", b"a,b\n1,2\n3,4\n", "text/csv"))])
    assert sent.status_code == 202 and sent.json()["files"] == ["data.csv"]
    events = read_events(client, sid)
    assert events[0]["files"] == ["/mnt/data/data.csv"]
    assert "/mnt/data/data.csv" in glm.posts[-2].prompt  # the model was told of the file
    (result,) = [e for e in events if e["type"] == "tool_result"]
    assert result["observation"]["content"].splitlines()[0] == "4", result
    (produced,) = [e for e in events if e["type"] == "artifact" and e["name"] == "totals.csv"]
    assert produced["kind"] == "file"
    download = client.get(produced["url"])
    assert download.status_code == 200 and download.text.splitlines() == ["a,b,total", "1,2,3", "3,4,7"]
    assert download.headers["content-disposition"].startswith("attachment")
    assert download.headers["content-type"] == "application/octet-stream"  # never rendered by the browser


@pytest.mark.parametrize("approve", [True, False])
def test_a_call_that_needs_approval_waits_for_the_user(client, glm, approve):
    glm.script(['add\n{"a": 2, "b": 3}', "\nDone."])
    sid = new_session(client)
    client.post(f"/api/sessions/{sid}/messages", json={"text": "2+3?"})
    events = read_events(client, sid, until=lambda e: e["type"] == "approval_request")
    request = events[-1]
    assert request["type"] == "approval_request" and request["call"]["name"] == "add"
    assert client.post(request["url"], json={"approve": "yes"}).status_code == 400
    assert client.post(request["url"], json={"approve": approve}).status_code == 200
    rest = read_events(client, sid, after=len(events) - 1)
    (result,) = [e for e in rest if e["type"] == "tool_result"]
    if approve:
        assert result["observation"]["content"] == "5"
    else:
        assert "did not approve" in result["observation"]["content"]
    assert client.post(request["url"], json={"approve": True}).status_code == 404  # answered once only


def test_cancelling_a_long_cell_ends_the_turn_and_the_session_goes_on(client, glm):
    glm.script(["python\nimport time\nprint('started', flush=True)\ntime.sleep(120)", "\nAgain."])
    sid = new_session(client)
    client.post(f"/api/sessions/{sid}/messages", json={"text": "sleep"})
    read_events(client, sid, until=lambda e: e["type"] == "tool_call")
    busy = client.post(f"/api/sessions/{sid}/messages", json={"text": "meanwhile"})
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "turn_in_progress"
    assert client.post(f"/api/sessions/{sid}/cancel").json() == {"cancelled": True}
    events = read_events(client, sid)
    assert events[-1]["result"]["status"] == "interrupted"
    assert "interrupted" in [e for e in events if e["type"] == "tool_result"][-1]["observation"]["content"]
    before = len(events)
    assert client.post(f"/api/sessions/{sid}/messages", json={"text": "and now?"}).status_code == 202
    after = read_events(client, sid, after=before - 1)
    assert after[-1]["result"]["answer"] == "Again."
    # read from the start, the first turn comes without its per-piece events; the last one whole
    replay = read_events(client, sid, runs=2)
    first = replay[:next(i for i, e in enumerate(replay) if e["type"] == "run_finished") + 1]
    assert "token" not in types(first) and "tool_stream" not in types(first) and "model_turn" in types(first)
    assert "token" in types(replay[len(first):])


def test_one_session_cannot_reach_another_s_artifacts_or_events(client, glm):
    glm.script([PLOT, "\nA's plot."])
    a, b = new_session(client), new_session(client)
    client.post(f"/api/sessions/{a}/messages", json={"text": "plot"})
    events_a = read_events(client, a)
    (artifact,) = [e for e in events_a if e["type"] == "artifact"]
    assert client.get(artifact["url"]).status_code == 200
    for url in [artifact["url"].replace(a, b), f"/api/sessions/{b}/artifacts/..%2F..%2F{artifact['name']}",
                f"/api/sessions/{b}/artifacts/{artifact['name']}"]:
        refused = client.get(url)
        assert refused.status_code == 404 and refused.json()["error"]["code"] in ("no_such_artifact", "http_error")
    assert client.get(f"/api/sessions/{b}/artifacts").json() == {"artifacts": []}
    with client.stream("GET", f"/api/sessions/{b}/events", timeout=httpx.Timeout(60, read=1.0)) as response:
        with pytest.raises(httpx.ReadTimeout):  # nothing of A's run comes down B's stream
            for line in response.iter_lines():
                assert not line.startswith("data:"), line
    client.delete(f"/api/sessions/{a}")
    assert client.get(artifact["url"]).status_code == 404  # deleted with its session


def test_each_session_has_a_kernel_of_its_own(client, glm):
    glm.script(["python\nsecret = 'of A'\nprint(secret)", "\nSet.", "python\nprint(secret)", "\nNot here."])
    a, b = new_session(client), new_session(client)
    client.post(f"/api/sessions/{a}/messages", json={"text": "set it"})
    assert read_events(client, a)[-1]["result"]["steps"][0]["observations"][0]["content"].startswith("of A")
    client.post(f"/api/sessions/{b}/messages", json={"text": "read it"})
    observation = read_events(client, b)[-1]["result"]["steps"][0]["observations"][0]
    assert observation["is_error"] and "NameError" in observation["content"]


def test_every_limit_is_a_clear_4xx(client, glm, live):
    sid = new_session(client)
    too_many = [("files", (f"f{i}.txt", b"x", "text/plain")) for i in range(3)]
    big = [("files", ("big.bin", b"x" * 60_000, "text/plain"))]
    two = [("files", (f"half{i}.bin", b"x" * 45_000, "text/plain")) for i in range(2)]
    huge = [("files", ("huge.bin", b"x" * 1_200_000, "text/plain"))]  # refused on its Content-Length alone
    for files, code in [(too_many, 413), (big, 413), (two, 413), (huge, 413)]:
        refused = client.post(f"/api/sessions/{sid}/messages", data={"text": "hi"}, files=files)
        assert refused.status_code == code, refused.text
        assert re.search(r"\[files\] max_(files|file_mb|total_mb)", refused.json()["error"]["message"])
    for body, code in [({"text": "  "}, "empty_message"), ({}, "empty_message")]:
        refused = client.post(f"/api/sessions/{sid}/messages", json=body)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == code
    assert client.post(f"/api/sessions/{sid}/messages", content=b"{", headers={"content-type": "application/json"}
                       ).json()["error"]["code"] == "bad_json"
    assert client.get("/api/sessions/nope/events").status_code == 404
    assert client.delete("/api/sessions/nope").json()["error"]["code"] == "no_such_session"
    new_session(client), new_session(client)
    full = client.post("/api/sessions")
    assert full.status_code == 429 and full.json()["error"]["code"] == "too_many_sessions"


def test_idle_sessions_expire(glm, tmp_path):
    agent = Agent(model=CompletionsModel(glm.url, glm.model), tools=[], runs_dir=tmp_path)
    with LiveServer(agent, settings=_settings(limits=Limits(max_sessions=1, idle_timeout_s=0.3))) as server:
        with server.client() as client:
            sid = new_session(client)
            assert client.post("/api/sessions").status_code == 429
            deadline = time.monotonic() + 20
            while client.get(f"/api/sessions/{sid}/artifacts").status_code == 200:
                assert time.monotonic() < deadline
                time.sleep(0.5)  # each look keeps it alive: expiry needs a quiet spell longer than the timeout
                time.sleep(0.5)
            assert client.post("/api/sessions").status_code == 201  # its place is free again


def _settings(**values):
    from agent.serve import ServeSettings

    return ServeSettings(**values)


def test_the_openai_facade_answers_as_a_model(client, glm, live):
    glm.script([PLOT, "\nIt is 937.", PLOT, "\nStill 937."])
    completion = client.post("/v1/chat/completions", json={
        "model": "agent", "messages": [{"role": "user", "content": "17**13 mod 1000"}]}).json()
    text = completion["choices"][0]["message"]["content"]
    assert text.endswith("It is 937.") and "`python`" in text
    (link,) = re.findall(r"!\[[^\]]+\]\((http[^)]+)\)", text)
    assert client.get(link).content.startswith(b"\x89PNG")
    client.delete(f"/api/sessions/{completion['session_id']}")

    # the project's own OpenAI client, streaming, as any OpenAI-compatible user would call it
    model = OpenAIChatModel(f"{live.url}/v1", "agent")
    tokens: list[str] = []

    async def ask():
        try:
            return await model.generate([Message(role="user", content="again")], [], live.app.state.manager.agent
                                        .policy.model, tokens.append)
        finally:
            await model.aclose()

    turn = asyncio.run(ask())
    assert turn.content.endswith("Still 937.") and len(tokens) > 2 and "".join(tokens) == turn.content


def test_pages_carry_a_strict_content_security_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and "<script" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "access-control-allow-origin" not in client.get("/api/info", headers={"Origin": "http://evil"}).headers


def test_a_short_token_is_refused(glm):
    proc = subprocess.run([sys.executable, "-m", "agent", "serve", "--token", "abc", "--base-url", glm.url,
                           "--model", glm.model, "--tools", "none"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 2 and "--token is too short" in proc.stderr and "Traceback" not in proc.stderr


def test_bound_to_all_addresses_the_token_is_required_everywhere(glm, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("AGENT_SERVE_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "agent", "serve", "--host", "0.0.0.0", "--port", str(port),
                             "--base-url", glm.url, "--model", glm.model, "--tools", "none"],
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        token = None
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("token"):
                token = line.rsplit(" ", 1)[1].strip()
            if "agent serve:" in line:
                break
        assert token and len(token) >= 24
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/api/info")
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
        with httpx.Client(base_url=base, timeout=30) as anonymous:
            for method, path in [("GET", "/"), ("GET", "/api/info"), ("POST", "/api/sessions"),
                                 ("GET", "/api/sessions/x/events"), ("GET", "/api/sessions/x/artifacts/y"),
                                 ("POST", "/v1/chat/completions")]:
                refused = anonymous.request(method, path)
                assert refused.status_code == 401, path
                wrong = anonymous.request(method, path, headers={"Authorization": "Bearer " + "x" * len(token)})
                assert wrong.status_code == 401
        with httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {token}"}) as client:
            glm.script(["\nHello from far away."])
            sid = new_session(client)
            client.post(f"/api/sessions/{sid}/messages", json={"text": "hi"})
            assert read_events(client, sid)[-1]["result"]["answer"] == "Hello from far away."
        assert httpx.get(f"{base}/api/info", params={"token": token}).status_code == 200  # downloads, links
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_readme_lists_every_endpoint(live):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme.split("\n### API\n", 1)[1].split("\n### ", 1)[0]
    listed = set(re.findall(r"^\| `([A-Z]+ /[^`]*)`", table, flags=re.M))
    served = {f"{method} {route.path.replace('{sid}', '{id}')}" for route in live.app.routes
              for method in getattr(route, "methods", None) or () if method != "HEAD" and route.path != "/"}
    assert served == listed
