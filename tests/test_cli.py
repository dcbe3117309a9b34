"""The `agent` command, run as a user runs it, against a served GLM-4 on loopback."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fake_glm_server import Fail

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

MYTOOLS = '''
from agent import tool

@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first
        b: the second
    """
    return a + b
'''


def agent_cli(*args, env=None, cwd=None):
    environment = {**os.environ, "COLUMNS": "120", **(env or {})}
    environment.pop("OPENAI_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=120,
                          env=environment, cwd=cwd)


@pytest.fixture
def mytools(tmp_path):
    path = tmp_path / "mytools.py"
    path.write_text(MYTOOLS)
    return path


@pytest.mark.parametrize("backend", ["chat", "completions"])
def test_run_against_a_served_model_prints_the_answer(fake_server, mytools, backend):
    fake_server.script(['add\n{"a": 2, "b": 3}', "\n2 + 3 = 5."])
    proc = agent_cli("run", "What is 2+3?", "--base-url", fake_server.url, "--model", fake_server.model,
                     "--tools-module", str(mytools), "--tools", "none", "--backend", backend)
    assert proc.returncode == 0, proc.stderr
    assert "2 + 3 = 5." in proc.stdout
    assert "add" in proc.stdout and "5" in proc.stdout  # the call and its observation are shown
    path = "/v1/chat/completions" if backend == "chat" else "/v1/completions"
    assert [r.path for r in fake_server.posts] == [path, path]
    if backend == "completions":  # the tool's result went back to the model in GLM-4 format
        assert fake_server.posts[1].prompt.endswith("<|observation|>\n5<|assistant|>")
    else:
        assert fake_server.posts[1].body["messages"][-1] == {
            "role": "tool", "tool_call_id": fake_server.posts[1].body["messages"][-2]["tool_calls"][0]["id"],
            "content": "5"}


def test_json_output_ends_with_the_result(fake_server, mytools, tmp_path):
    fake_server.script(['add\n{"a": 2, "b": 3}', "\nFive."])
    transcript = tmp_path / "t.jsonl"
    proc = agent_cli("run", "What is 2+3?", "--base-url", fake_server.url, "--model", fake_server.model,
                     "--tools-module", str(mytools), "--tools", "none", "--json", "--transcript", str(transcript))
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_finished"
    assert events[-1]["result"]["answer"] == "Five." and events[-1]["result"]["status"] == "answered"
    assert {"tool_call", "tool_result", "token", "final_answer"} <= {e["type"] for e in events}
    recorded = [json.loads(line)["type"] for line in transcript.read_text().splitlines()]
    assert recorded[-1] == "run_finished" and "model_turn" in recorded


def test_unreachable_server_is_one_clear_line(mytools):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once we leave: nothing listens there
    proc = agent_cli("run", "hi", "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "glm-4-9b-chat",
                     "--tools", "none", "--policy", "default")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and f"127.0.0.1:{port}" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_auth_error_is_one_clear_line(fake_server):
    fake_server.script([Fail(401)])
    proc = agent_cli("run", "hi", "--base-url", fake_server.url, "--model", fake_server.model, "--tools", "none")
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "api key" in proc.stderr.lower() or "API key" in proc.stderr


@pytest.mark.parametrize("args, message, code", [
    (["run", "hi", "--policy", "nope"], "Unknown policy 'nope'", 2),
    (["run", "hi", "--tools", "cogview", "--policy", "strict"], "add it to [tools] enabled", 2),
    (["tools", "--tools", "cogview", "--policy", "strict"], "does not enable the 'cogview' tool", 2),
    (["run", ""], "The task is empty", 2),
    (["run", "hi", "--timeout", "5"], "only apply to served models", 2),
    (["run", "hi", "--base-url", "http://127.0.0.1:1/v1"], "--model is required with --base-url", 2),
    (["run", "hi", "--tools", "shell"], "Unknown built-in tool 'shell'", 2),
    (["run", "hi", "--tools-module", "missing_tools.py"], "does not exist", 2),
    (["run", "hi", "--backend", "completions"], "--backend only applies to served models", 2),
    (["run", "hi", "--max-steps", "0"], "", 2),
])
def test_usage_and_configuration_errors(args, message, code):
    proc = agent_cli(*args)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    if message:
        assert len(proc.stderr.strip().splitlines()) == 1


def test_budget_exhausted_exit_code(fake_server, mytools):
    """Exit 3 only when the budget ran out before any answer; an answer in the last turn is a success."""
    served = ["--base-url", fake_server.url, "--model", fake_server.model, "--tools", "none",
              "--tools-module", str(mytools), "--max-steps", "2", "--backend", "completions"]
    fake_server.script(['add\n{"a": 1, "b": 1}', 'add\n{"a": 1, "b": 2}', "\nStopped early."])
    proc = agent_cli("run", "loop", *served)
    assert proc.returncode == 0, proc.stderr
    assert "Stopped early." in proc.stdout and "budget exhausted" in proc.stdout
    fake_server.script(['add\n{"a": 1, "b": 1}', 'add\n{"a": 1, "b": 2}', 'add\n{"a": 1, "b": 3}'])
    proc = agent_cli("run", "loop", *served)
    assert proc.returncode == 3, proc.stderr


def test_tools_lists_schemas(mytools):
    proc = agent_cli("tools", "--tools", "none", "--tools-module", str(mytools), "--json")
    assert proc.returncode == 0, proc.stderr
    (spec,) = json.loads(proc.stdout)
    assert spec["name"] == "add" and spec["parameters"]["properties"]["a"] == {"description": "the first",
                                                                               "type": "integer"}
    proc = agent_cli("tools", "--tools", "none", "--tools-module", str(EXAMPLES / "custom_tool.py"))
    assert "convert" in proc.stdout and "notebook" in proc.stdout
    proc = agent_cli("tools", "--tools", "simple_browser", "--format", "glm45")  # optional and union types, named
    assert "num: integer|null" in proc.stdout and "id: integer|string, cursor: integer|null" in proc.stdout


def test_chat_keeps_the_conversation(fake_server, mytools):
    fake_server.script(['add\n{"a": 2, "b": 2}', "\nFour.", "\nYou asked about 2+2."])
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "chat", "--base-url", fake_server.url, "--model", fake_server.model,
         "--tools", "none", "--tools-module", str(mytools), "--backend", "completions"],
        input="What is 2+2?\nWhat did I ask?\n/exit\n", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Four." in proc.stdout and "You asked about 2+2." in proc.stdout
    last_prompt = fake_server.posts[-1].prompt
    assert "What is 2+2?" in last_prompt and "<|assistant|>\nFour.<|user|>\nWhat did I ask?" in last_prompt


def test_example_custom_tool_runs():
    proc = subprocess.run([sys.executable, str(EXAMPLES / "custom_tool.py")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "answer: 120 US dollars are 18,156 yen" in proc.stdout


def test_example_served_model_runs(fake_server):
    fake_server.script(['population\n{"city": "Shanghai"}', 'population\n{"city": "Beijing"}',
                        "\nAbout 2,977,800 more."])
    proc = subprocess.run([sys.executable, str(EXAMPLES / "served_model.py"), fake_server.url, fake_server.model],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "[population] 24870895" in proc.stdout and "=> About 2,977,800 more." in proc.stdout


@pytest.mark.slow
def test_example_analyse_csv_runs(fake_server, tmp_path):
    code = ("import pandas as pd\ndf = pd.read_csv('/mnt/data/sales.csv')\n"
            "df.select_dtypes('number').sum().to_csv('/mnt/data/totals.csv', header=['total'])")
    fake_server.script([f"python\n{code}", "\nsouth has the largest total."])
    proc = subprocess.run([sys.executable, str(EXAMPLES / "analyse_csv.py"), "--demo", "--base-url", fake_server.url,
                           "--model", fake_server.model], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "answer (answered): south has the largest total." in proc.stdout
    saved = [line.split("saved file: ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("saved file: ")]
    assert Path(saved[0]).read_text() == ",total\nnorth,400\nsouth,335\n"
    assert "/mnt/data/sales.csv (text/csv" in fake_server.posts[0].prompt


@pytest.mark.parametrize("example", ["analyse_csv.py", "embedding.py", "served_model.py"])
def test_examples_report_a_failed_run_as_a_failure(example, tmp_path):
    args = {"analyse_csv.py": ["--demo", "--base-url", "http://127.0.0.1:9/v1", "--model", "x"],
            "embedding.py": ["hi", "--base-url", "http://127.0.0.1:9/v1", "--model", "x", "--tools", ""],
            "served_model.py": ["http://127.0.0.1:9/v1", "x"]}[example]
    proc = subprocess.run([sys.executable, str(EXAMPLES / example), *args], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 1 and "error:" in proc.stderr and "127.0.0.1:9" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_example_embedding_runs(fake_server):
    fake_server.script(["\nNo tools needed: 42."])
    proc = subprocess.run([sys.executable, str(EXAMPLES / "embedding.py"), "What is 6*7?", "--base-url",
                           fake_server.url, "--model", fake_server.model, "--tools", ""],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "answer (answered, 1 steps" in proc.stdout and "No tools needed: 42." in proc.stdout


def test_approval_with_no_terminal_says_so_at_the_start_and_in_the_refusal(fake_server, mytools, tmp_path):
    policy = tmp_path / "ask.toml"
    policy.write_text('[tools]\nrequire_approval = ["add"]\n')
    fake_server.script(['add\n{"a": 2, "b": 3}', "\nI was not allowed to add."])
    proc = agent_cli("run", "What is 2+3?", "--base-url", fake_server.url, "--model", fake_server.model,
                     "--tools-module", str(mytools), "--tools", "none", "--policy", str(policy))
    assert proc.returncode == 0, proc.stderr
    assert "asks before each call to add" in proc.stderr and "--yes approves them" in proc.stderr
    assert "need the user's approval, and no one could be asked" in proc.stdout
    approved = agent_cli("run", "What is 2+3?", "--base-url", fake_server.url, "--model", fake_server.model,
                         "--tools-module", str(mytools), "--tools", "none", "--policy", str(policy), "--yes")
    assert "asks before" not in approved.stderr


@pytest.mark.parametrize("example", ["analyse_csv.py", "embedding.py"])
def test_examples_without_weights_say_so_in_one_line(example, tmp_path):
    args = {"analyse_csv.py": ["--demo"], "embedding.py": ["hi"]}[example]
    proc = subprocess.run([sys.executable, str(EXAMPLES / example), *args, "--model", str(tmp_path / "no-weights")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env={**os.environ,
                                                                                         "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "no-weights" in line and "--base-url" in line


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}])
def test_local_default_without_weights_is_one_clear_line(tmp_path, env):
    proc = agent_cli("run", "hi", env={"HF_HOME": str(tmp_path / "hf"), "TRANSFORMERS_OFFLINE": "0", **env})
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert "THUDM/glm-4-9b-chat-hf" in line and "--model /path/to/glm-4-9b-chat-hf" in line and "--base-url" in line


def test_text_with_brackets_is_shown_as_written():
    """Page titles, code and errors may contain rich markup syntax; it must be printed, not parsed."""
    from rich.console import Console

    from agent.display import EventDisplay
    from agent.events import FinalAnswer, RunError
    from agent.messages import Citation

    console = Console(record=True, width=200)
    display = EventDisplay(console, errors=console)
    display.show(FinalAnswer(run_id="r", answer="See 【0†Docs】.",
                             citations=[Citation(id="0", url="https://docs.example/x", title="Docs [/x] [bold]page")]))
    display.show(RunError(run_id="r", message="add it to [tools] enabled [/oops]"))
    text = console.export_text()
    assert "[0] Docs [/x] [bold]page — https://docs.example/x" in text
    assert "error: add it to [tools] enabled [/oops]" in text


def test_agent_run_has_one_session_so_its_pool_warms_no_spare_kernel(fake_server):
    from agent import cli

    agent = cli._build_agent(fake_server.model, fake_server.url, None, None, "none", None, "default", None, None, None,
                             yes=True, interactive=False, one_session=True)
    try:
        assert agent.policy.sandbox.pool_refill is False
    finally:
        agent.close()
