"""`agent eval` and `agent batch` as a user runs them, against a served GLM-4 on loopback.

The fake server is scripted per task from what it is sent: it finds the task's question in the prompt,
answers with a real ``python`` call (printing the right value, or a wrong one for chosen tasks), then
answers with whatever the sandbox printed, so the accuracy is known exactly and comes through a real
kernel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"
needs_gsm8k = pytest.mark.skipif(not GSM8K.exists(), reason="../shared/data/gsm8k is absent")
FAST_KERNELS = "[sandbox]\npreload = []\n"  # the protocol's tools, without the warm-up imports the tests do not need


def agent_cli(*args, cwd=None, timeout=600):
    """``python -m agent`` with this checkout first on the path (the console script may be another checkout's)."""
    root = str(Path(__file__).resolve().parents[1])
    environment = {**os.environ, "COLUMNS": "160", "PYTHONPATH": os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    environment.pop("OPENAI_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=timeout,
                          env=environment, cwd=cwd)


def gsm8k_rows(n: int) -> list[dict]:
    with GSM8K.open(encoding="utf-8") as lines:
        return [json.loads(next(lines)) for _ in range(n)]


def final(row: dict) -> str:
    return row["answer"].rsplit("####", 1)[1].strip().replace(",", "")


def solver(questions: dict[str, str], wrong: set[str]):
    """A served model that solves each question with one python call: right, or off by one for ``wrong`` ones."""

    def reply(request):
        prompt = request.prompt
        question = next(q for q in questions if q in prompt)
        if "<|observation|>" not in prompt:
            value = questions[question] + (" + 1" if question in wrong else "")
            return f"python\n```python\nprint({value})\n```"
        printed = prompt.rsplit("<|observation|>", 1)[1].removesuffix("<|assistant|>").strip()
        return f"\nThe answer is {printed}."

    return reply


@pytest.fixture
def fast_policy(tmp_path):
    path = tmp_path / "fast.toml"
    path.write_text(FAST_KERNELS)
    return path


@needs_gsm8k
@pytest.mark.slow
def test_gsm8k_accuracy_is_exact_and_a_rerun_resumes(fake_server, fast_policy, tmp_path):
    rows = gsm8k_rows(50)
    wrong = {row["question"] for index, row in enumerate(rows) if index % 3 == 1}  # 17 of 50
    fake_server.script(solver({row["question"]: final(row) for row in rows}, wrong))
    results = tmp_path / "gsm8k.jsonl"
    common = ["eval", "gsm8k", "--data", str(GSM8K), "--base-url", fake_server.url, "--model", fake_server.model,
              "--backend", "completions", "--policy", str(fast_policy), "--concurrency", "8", "-o", str(results)]

    first = agent_cli(*common, "--limit", "20")
    assert first.returncode == 0, first.stderr
    assert len(fake_server.posts) == 40  # two model turns per task

    proc = agent_cli(*common, "--limit", "50")
    assert proc.returncode == 0, proc.stderr
    assert len(fake_server.posts) == 100  # the 20 finished tasks were not run again
    assert "resuming, 20 of 50 runs already done" in proc.stderr
    assert "| accuracy | 66.00% (33/50) |" in proc.stdout

    summary = json.loads((tmp_path / "gsm8k.summary.json").read_text())
    assert summary["accuracy"] == pytest.approx(33 / 50) and summary["tasks"] == 50 and summary["errors"] == 0
    assert summary["mean_steps"] == 2 and summary["mean_tool_calls"] == 1
    assert summary["model"] == fake_server.model and summary["backend"] == "completions"
    assert summary["tools"] == ["python"] and summary["policy"]["name"] == "fast"
    assert summary["dataset_hash"].startswith("sha256:") and summary["version"]
    assert (tmp_path / "gsm8k.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "gsm8k.summary.md").read_text().count("|") > 20

    lines = [json.loads(line) for line in results.read_text().splitlines()]
    header, records = lines[0], lines[1:]
    assert header["type"] == "header" and header["benchmark"] == "gsm8k" and header["scorer"] == "numeric"
    assert len(records) == 50 and sum(r["correct"] for r in records) == 33
    by_id = {r["id"]: r for r in records}
    assert by_id["gsm8k-0"]["extracted"] == final(rows[0]) == by_id["gsm8k-0"]["expected"]
    assert by_id["gsm8k-1"]["correct"] is False
    transcript = Path(by_id["gsm8k-0"]["transcript"])
    events = [json.loads(line)["type"] for line in transcript.read_text().splitlines()]
    assert events[0] == "run_started" and "tool_result" in events and events[-1] == "run_finished"

    again = agent_cli(*common, "--limit", "50")
    assert again.returncode == 0, again.stderr
    assert len(fake_server.posts) == 100  # nothing left to run: the report is made from the file
    assert "| accuracy | 66.00% (33/50) |" in again.stdout
