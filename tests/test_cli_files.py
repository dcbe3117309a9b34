"""`agent run --file`, `--workdir`, live cells and Ctrl-C, as a user meets them: a real `agent` process
against a served GLM-4 on loopback, signals sent to it for real."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from agent import Agent
from agent.display import EventDisplay
from agent.events import ToolProgress, ToolStream
from agent.models import ScriptedModel
from agent.policy import Policy
from agent.transcript import read_transcript
from test_cli import agent_cli

pytestmark = pytest.mark.slow

TASK = "Add the columns a and b of data.csv and save the result as out.csv"
CODE = ("```python\nimport pandas as pd\ndf = pd.read_csv('/mnt/data/data.csv')\ndf['c'] = df['a'] + df['b']\n"
        "df.to_csv('/mnt/data/out.csv', index=False)\nprint(df.to_string(index=False))\n```")
SLOW_CELL = "x = 41\nimport time\nprint('started', flush=True)\ntime.sleep(60)"


def served(fake_server) -> list[str]:
    return ["--base-url", fake_server.url, "--model", fake_server.model, "--backend", "completions"]


@pytest.fixture
def data_csv(tmp_path) -> Path:
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,2\n10,20\n")
    return path


def test_the_issue_command_keeps_out_csv_on_the_host(fake_server, data_csv, tmp_path):
    fake_server.script([f"python\n{CODE}", "\nSaved out.csv with the column c = a + b."])
    proc = agent_cli("run", TASK, "--file", str(data_csv), "--tools", "python", *served(fake_server))
    assert proc.returncode == 0, proc.stderr
    assert "/mnt/data/data.csv (text/csv, 14 B)" in fake_server.posts[0].prompt  # the model was told
    saved = [line.split("saved file:", 1)[1].strip() for line in proc.stdout.splitlines() if "saved file:" in line]
    assert len(saved) == 1 and Path(saved[0]).is_absolute()
    assert Path(saved[0]).read_text() == "a,b,c\n1,2,3\n10,20,30\n"
    assert "python sandbox: " in proc.stdout  # the tier in force, said once
    assert proc.stdout.count("python sandbox: ") == 1


def test_a_missing_file_is_a_usage_error_that_names_it(fake_server, tmp_path):
    proc = agent_cli("run", TASK, "--file", str(tmp_path / "nope.csv"), *served(fake_server))
    assert proc.returncode == 2
    assert "nope.csv does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert fake_server.posts == []  # refused before anything ran


def test_without_python_the_document_is_read_into_the_turn(fake_server, tmp_path):
    (tmp_path / "notes.md").write_text("# Notes\nThe launch is on Tuesday.")
    fake_server.script(["\nTuesday."])
    proc = agent_cli("run", "When is the launch?", "--file", str(tmp_path / "notes.md"), "--tools", "none",
                     *served(fake_server))
    assert proc.returncode == 0, proc.stderr
    prompt = fake_server.posts[0].prompt
    assert "[File Name]\nnotes.md\n[File Content]\n# Notes\nThe launch is on Tuesday." in prompt
    assert "1 file uploaded.\nWhen is the launch?" in prompt


def test_workdir_is_used_as_mnt_data(fake_server, tmp_path):
    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / "data.csv").write_text("a,b\n1,2\n")
    fake_server.script([f"python\n{CODE}", "\nDone."])
    proc = agent_cli("run", TASK, "--workdir", str(workdir), "--tools", "python", *served(fake_server))
    assert proc.returncode == 0, proc.stderr
    assert (workdir / "out.csv").read_text() == "a,b,c\n1,2,3\n"
    assert f"saved file: {workdir / 'out.csv'}" in proc.stdout


# ----------------------------------------------------------------------------------------------
# live cells


def test_a_running_cell_streams_its_output_as_events(tmp_path):
    policy = Policy(sandbox={"pool_size": 1, "preload": []})
    code = "import time\nfor i in range(3):\n    print('line', i, flush=True)\n    time.sleep(0.4)"
    agent = Agent(model=ScriptedModel([f"python\n{code}", "\nDone."]), tools=["python"], policy=policy)
    events = list(agent.stream("count"))
    agent.close()
    kinds = [event.type for event in events]
    chunks = [event for event in events if isinstance(event, ToolStream)]
    assert "".join(chunk.text for chunk in chunks) == "line 0\nline 1\nline 2\n"
    assert kinds.index("tool_stream") < kinds.index("tool_result")  # before the cell ended
    progress = [event.message for event in events if isinstance(event, ToolProgress)]
    assert any(message.startswith("running for ") for message in progress)
    assert [event.type for event in events].count("notice") == 1


def test_the_terminal_shows_a_cells_last_lines_under_its_progress_line():
    screen = io.StringIO()
    display = EventDisplay(Console(file=screen, force_terminal=True, width=80), stream_tokens=False)
    display.show(ToolProgress(run_id="r", tool="python", message="running for 3 s"))
    for i in range(8):
        display.show(ToolStream(run_id="r", tool="python", stream="stdout", text=f"row {i}\n"))
    assert display._progress is not None
    shown = "\n".join(str(r) for r in display._progress.get_renderables())
    assert "row 7" in shown and "row 2" not in shown  # the last few lines only
    display.stop()


# ----------------------------------------------------------------------------------------------
# Ctrl-C


def _start(args: list[str], cwd: Path, stdin=None) -> subprocess.Popen:
    env = {**os.environ, "COLUMNS": "120"}
    env.pop("OPENAI_API_KEY", None)
    return subprocess.Popen([sys.executable, "-m", "agent", *args], cwd=cwd, env=env, text=True, stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_ctrl_c_in_agent_run_interrupts_the_cell_and_exits_130(fake_server, tmp_path):
    fake_server.script([f"python\n{SLOW_CELL}", "\nnever asked"])
    transcript = tmp_path / "run.jsonl"
    proc = _start(["run", "wait", "--json", "--tools", "python", "--transcript", str(transcript),
                   *served(fake_server)], tmp_path)
    assert proc.stdout is not None
    for line in proc.stdout:  # --json streams events: wait until the cell has printed
        if '"tool_stream"' in line and "started" in line:
            break
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert time.monotonic() - started < 30  # not the cell's 60 s
    assert "Traceback" not in stderr and stderr.strip().count("\n") == 0 and "interrupted" in stderr
    events = read_transcript(transcript)
    finished = [event for event in events if event.type == "run_finished"]
    assert finished and finished[-1].result.status == "interrupted"
    results = [event for event in events if event.type == "tool_result"]
    assert results and "interrupted" in results[-1].observation.content


def test_ctrl_c_in_agent_chat_cancels_the_turn_and_keeps_the_kernel(fake_server, tmp_path):
    workdir = tmp_path / "w"
    cell = "open('/mnt/data/started', 'w').write('1')\n" + SLOW_CELL
    fake_server.script([f"python\n{cell}", "python\nprint(x + 1)", "\nIt is 42."])
    proc = _start(["chat", "--tools", "python", "--workdir", str(workdir), *served(fake_server)], tmp_path,
                  stdin=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write("run the slow cell\n")
    proc.stdin.flush()
    _wait_for(lambda: (workdir / "started").exists())
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)
    proc.stdin.write("what is x + 1?\n/exit\n")
    proc.stdin.flush()
    stdout, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 0, stderr
    assert "this turn was cancelled" in stderr and "Traceback" not in stderr
    assert "42" in stdout and "It is 42." in stdout  # same kernel: x survived the interruption
    # the history went on whole: the interrupted call got an observation before the next turn
    assert "Not finished: the user interrupted the run." in fake_server.posts[1].prompt


async def test_cancelling_arun_interrupts_the_cell_and_the_session_goes_on():
    policy = Policy(sandbox={"pool_size": 1, "preload": []})
    agent = Agent(model=ScriptedModel([f"python\n{SLOW_CELL}", "python\nprint(x + 1)", "\n42"]),
                  tools=["python"], policy=policy)
    async with agent.chat() as session:
        started = asyncio.Event()

        async def first_turn() -> None:
            async for event in session.astream("slow"):
                if isinstance(event, ToolStream) and "started" in event.text:
                    started.set()

        began = time.monotonic()
        task = asyncio.create_task(first_turn())
        await asyncio.wait_for(started.wait(), 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        result = await session.arun("next")
        assert time.monotonic() - began < 30  # the sleeping cell was interrupted, not waited out
    await agent.aclose()
    assert result.status == "answered" and result.steps[0].observations[0].content == "42"
    interrupted = [m for m in session.messages if m.role == "observation" and "interrupted" in m.content]
    assert interrupted


# ----------------------------------------------------------------------------------------------
# issue 10.16: what the agent leaves on the host is the user's alone; no credentials in what it prints


def test_runs_and_transcripts_are_owner_only(fake_server, data_csv, tmp_path):
    plot = CODE.replace("\n```", "\nimport matplotlib.pyplot as plt\nplt.plot([1, 2]); plt.show()\n```")
    fake_server.script([f"python\n{plot}", "\nDone."])
    transcript = tmp_path / "logs" / "run.jsonl"
    proc = agent_cli("run", TASK, "--file", str(data_csv), "--tools", "python", "--transcript", str(transcript),
                     *served(fake_server))
    assert proc.returncode == 0, proc.stderr
    assert transcript.stat().st_mode & 0o777 == 0o600 and transcript.parent.stat().st_mode & 0o777 == 0o700
    runs = tmp_path / "agent_runs"
    made = [runs, *runs.rglob("*")]
    assert len(made) >= 4  # agent_runs, the session folder, out.csv, the figure
    for path in made:
        assert path.stat().st_mode & 0o777 == (0o700 if path.is_dir() else 0o600), path


@pytest.mark.parametrize("backend", ["chat", "completions"])
def test_credentials_in_the_base_url_never_show(fake_server, tmp_path, backend):
    secret = "s3cr3t-pa55"
    host = fake_server.url.split("://", 1)[1]
    bad_port = f"http://alice:{secret}@127.0.0.1:9/v1"
    for url in (bad_port, f"http://alice:{secret}@{host}"):
        fake_server.script([])  # an empty script answers 500: an error that names the server
        transcript = tmp_path / f"{backend}-{url.count(':')}.jsonl"
        proc = agent_cli("run", "hi", "--base-url", url, "--model", fake_server.model, "--backend", backend,
                         "--json", "--transcript", str(transcript), env={"AGENT_TEST": "1"})
        assert proc.returncode == 1
        shown = proc.stdout + proc.stderr + transcript.read_text()
        assert secret not in shown and "alice:" not in shown
        assert "***@" in shown  # the server is still named, without its password


# ----------------------------------------------------------------------------------------------
# issue 10.14: nothing the model, a tool or a page wrote reaches the terminal as a control sequence

ESCAPES = ["\x1b]0;pwned-title\x07", "\x1b[2J", "\x1b]52;c;cm0gLXJmIH4=\x07", "\x9b31m", "\u202e"]


def test_control_sequences_are_shown_not_obeyed(fake_server):
    nasty = "".join(ESCAPES)
    code = f"print({nasty!r})\nraise ValueError({nasty!r})"
    fake_server.script([f"python\n{code}", f"\nThe answer{nasty} is 42."])
    proc = agent_cli("run", "go", "--tools", "python", *served(fake_server))
    assert proc.returncode == 0, proc.stderr
    for stream in (proc.stdout, proc.stderr):
        assert not any(ch in stream for ch in "\x1b\x9b\x07\u202e"), repr(stream[:2000])
    assert "\\x1b]0;pwned-title" in proc.stdout and "\\u202e" in proc.stdout  # visible, so the user sees it


def test_the_approval_prompt_shows_every_byte_that_will_run():
    from agent.cli import approval_prompt
    from agent.messages import ToolCall

    hidden = "print('hello world')\n\x1b[1A\x1b[2Kimport shutil; shutil.rmtree('/home')\rprint('hello world')"
    shown = approval_prompt(ToolCall(id="c", name="python", body=hidden)).plain
    assert "\x1b" not in shown and "\r" not in shown
    assert "\\x1b[1A\\x1b[2Kimport shutil; shutil.rmtree('/home')\\rprint('hello world')" in shown


def test_an_api_key_on_the_command_line_is_hidden_from_the_process_list(fake_server, tmp_path):
    """Issue 10.4: never leave a secret on a command line that other processes (a sandbox) can read."""
    secret = "sk-visible-" + "x" * 12
    proc = _start(["chat", "--tools", "none", "--api-key", secret, *served(fake_server)], tmp_path,
                  stdin=subprocess.PIPE)
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        # Until the child has exec'd, its cmdline reads empty: wait for ours, then for the key to go.
        _wait_for(lambda: b"--api-key" in cmdline.read_bytes() and secret.encode() not in cmdline.read_bytes())
        assert b"*" * len(secret) in cmdline.read_bytes()
        fake_server.script(["\nhello"])
        stdout, stderr = proc.communicate("hi\n/exit\n", timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert fake_server.posts[0].headers.get("authorization") == f"Bearer {secret}"  # the key itself still works


def test_ctrl_c_at_the_chat_prompt_gives_a_fresh_prompt(fake_server, tmp_path):
    fake_server.script(["\nfirst answer", "\nsecond answer"])
    proc = _start(["chat", "--tools", "none", *served(fake_server)], tmp_path, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write("hello\n")
    proc.stdin.flush()
    _wait_for(lambda: len(fake_server.posts) == 1)
    time.sleep(1.0)  # back at the prompt
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    stdout, stderr = proc.communicate("again\n/exit\n", timeout=60)
    assert proc.returncode == 0, stderr
    assert "second answer" in stdout and "/exit or Ctrl-D quits" in stdout and "Traceback" not in stderr
