"""Deadlines that hold (issue 11.1): a silent server, a run's wall time, a tool that never returns."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from agent import Agent, tool
from agent.models import OpenAIChatModel, ScriptedModel
from test_cli import agent_cli

pytestmark = pytest.mark.slow


@pytest.fixture
def silent_server():
    """Accepts connections and reads requests, and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    held, stop = [], threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/v1"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.parametrize("backend", ["chat", "completions"])
def test_a_silent_server_ends_the_run_within_the_timeout(silent_server, backend):
    started = time.monotonic()
    proc = agent_cli("run", "hi", "--base-url", silent_server, "--model", "m", "--backend", backend,
                     "--tools", "none", "--timeout", "2")
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    assert "sent nothing for 2 s" in proc.stderr and "--timeout" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert elapsed < 2 + 8  # generous: the interpreter's start is in there too


def test_wall_time_is_a_hard_limit_with_a_silent_server(silent_server, tmp_path):
    (tmp_path / "p.toml").write_text("[agent]\nwall_time_s = 5\n")
    started = time.monotonic()
    proc = agent_cli("run", "hi", "--base-url", silent_server, "--model", "m", "--tools", "none",
                     "--policy", str(tmp_path / "p.toml"), "--json")
    elapsed = time.monotonic() - started
    result = json.loads(proc.stdout.strip().splitlines()[-1])["result"]
    assert result["status"] == "budget_exhausted" and result["timings"]["total_s"] <= 5.5, result
    assert elapsed < 5 + 8


def test_a_tool_that_never_returns_is_abandoned_and_the_process_exits(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text(
        "import time, json\nfrom agent import Agent, tool\nfrom agent.models import ScriptedModel\n"
        "from agent.policy import Policy\n\n"
        "@tool\ndef wait_forever() -> str:\n    '''Never returns.'''\n    time.sleep(3600)\n    return 'late'\n\n"
        "policy = Policy(agent={'wall_time_s': 3})\n"
        "agent = Agent(model=ScriptedModel(['wait_forever\\n{}', '\\nGave up.']), tools=[wait_forever], policy=policy)\n"
        "started = time.monotonic()\nresult = agent.run('wait')\n"
        "print(json.dumps([result.status, result.answer, time.monotonic() - started,\n"
        "                  result.steps[0].observations[0].content]))\nagent.close()\n")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    status, answer, run_s, observation = json.loads(proc.stdout.strip().splitlines()[-1])
    assert status == "budget_exhausted" and answer == "Gave up." and run_s <= 3.5
    assert "abandoned" in observation
    assert time.monotonic() - started < 3 + 10  # the sleeping thread did not keep the process alive


def test_a_server_that_ignores_stream_true_is_read_as_json(fake_server, monkeypatch):
    """Some servers answer a streamed request with one JSON body: that answer is used, not refused."""
    import fake_glm_server

    real_chat = fake_glm_server._Handler._chat

    def no_streaming(handler, body, reply):
        return real_chat(handler, {**body, "stream": False}, reply)

    monkeypatch.setattr(fake_glm_server._Handler, "_chat", no_streaming)
    fake_server.script(['add\n{"a": 2, "b": 3}', "\nFive."])

    @tool
    def add(a: int, b: int) -> int:
        """Add.

        Args:
            a: one
            b: two
        """
        return a + b

    agent = Agent(model=OpenAIChatModel(fake_server.url, fake_server.model), tools=[add])
    result = agent.run("2+3?")
    agent.close()
    assert result.status == "answered" and result.answer == "Five." and result.steps[0].observations[0].content == "5"


# ----------------------------------------------------------------------------------------------
# the command line around a run (issue 11.4, the parts done so far)


def test_the_task_from_stdin_or_a_file_and_json_into_a_closed_pipe(fake_server, tmp_path):
    served = ["--base-url", fake_server.url, "--model", fake_server.model, "--backend", "completions", "--tools", "none"]
    fake_server.script(["\nfrom stdin", "\nfrom a file", "\nlong"])
    proc = subprocess.run([sys.executable, "-m", "agent", "run", "-", *served], input="What is it?\n",
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "What is it?" in fake_server.posts[0].prompt
    (tmp_path / "task.txt").write_text("Read me.\n")
    assert agent_cli("run", "--task-file", str(tmp_path / "task.txt"), *served).returncode == 0
    assert "Read me." in fake_server.posts[1].prompt
    piped = subprocess.run(f"{sys.executable} -m agent run hi --json {' '.join(served)} | head -1", shell=True,
                           capture_output=True, text=True, timeout=60)
    assert '"run_started"' in piped.stdout and "Error" not in piped.stderr and "Traceback" not in piped.stderr


def test_exit_3_only_without_an_answer_and_a_version(fake_server, tmp_path):
    served = ["--base-url", fake_server.url, "--model", fake_server.model, "--backend", "completions", "--tools", "none"]
    mytools = tmp_path / "addtools.py"
    mytools.write_text("from agent import tool\n\n@tool\ndef add(a: int, b: int) -> int:\n"
                       "    '''Add.\n\n    Args:\n        a: one\n        b: two\n    '''\n    return a + b\n")
    fake_server.script(['add\n{"a": 1, "b": 2}', "\nIt is 3."])
    answered = agent_cli("run", "1+2?", "--max-steps", "1", "--tools-module", "addtools", *served[:-2],
                         "--tools", "none", cwd=tmp_path)
    assert answered.returncode == 0, answered.stderr  # the last turn answered: not exit 3
    assert "It is 3." in answered.stdout
    version = agent_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("glm-agent ")


def test_unknown_tool_names_in_a_policy_are_errors(tmp_path):
    (tmp_path / "typo.toml").write_text('[tools]\nenabled = ["pyton"]\n')
    proc = agent_cli("tools", "--policy", str(tmp_path / "typo.toml"))
    assert proc.returncode == 2 and "'pyton' is not a built-in tool" in proc.stderr
    (tmp_path / "approval.toml").write_text('[tools]\nrequire_approval = ["pythn"]\n')
    from agent.errors import PolicyError

    with pytest.raises(PolicyError, match="require_approval names 'pythn'"):
        Agent(model=ScriptedModel(["\nx"]), tools=[], policy=str(tmp_path / "approval.toml"))


def test_chat_has_help_and_a_banner(fake_server):
    proc = subprocess.run([sys.executable, "-m", "agent", "chat", "--base-url", fake_server.url, "--model",
                           fake_server.model, "--tools", "none"], input="/help\n/exit\n",
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "glm-agent chat" in proc.stdout and "/upload PATH" in proc.stdout
    assert fake_server.posts == []  # /help never reaches the model
