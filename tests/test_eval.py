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

from test_cli import MYTOOLS  # a tools module with add(a, b)

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


TEMPLATE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "glm-4-9b-chat.chat_template.jinja"


def adder(request):
    """A served model that adds with the `add` tool: a call, then an answer with what the tool said."""
    text = request.prompt or json.dumps(request.body["messages"], ensure_ascii=False)
    numbers = [int(n) for n in text.rsplit("What is ", 1)[1].split("?")[0].split("+")]
    if "<|observation|>" not in text and '"role": "tool"' not in text:
        return f'add\n{{"a": {numbers[0]}, "b": {numbers[1]}}}'
    said = text.rsplit("<|observation|>\n", 1)[1].split("<|assistant|>")[0] if request.prompt else \
        request.body["messages"][-1]["content"]
    return f"\n{numbers[0]} + {numbers[1]} = {said}."


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


@pytest.mark.slow
def test_eval_jsonl_with_each_scorer(fake_server, tmp_path):
    (tmp_path / "mytools.py").write_text(MYTOOLS)
    tasks = write_jsonl(tmp_path / "tasks.jsonl", [{"id": f"t{i}", "task": f"What is {i}+{i * 10}?",
                                                    "answer": str(11 * i)} for i in range(1, 5)])
    fake_server.script(adder)
    base = ["eval", "jsonl", "--data", str(tasks), "--base-url", fake_server.url, "--model", fake_server.model,
            "--tools", "none", "--tools-module", "mytools.py", "--no-transcripts", "-c", "2"]
    scorer_file = tmp_path / "scorer.py"
    scorer_file.write_text("def right(answer, expected):\n    return answer.endswith(f'= {expected}.')\n")
    expectations = {"numeric": "4/4", "exact": "0/4", "regex": "4/4", f"python:{scorer_file}:right": "4/4"}
    for index, (scorer, shown) in enumerate(expectations.items()):
        proc = agent_cli(*base, "--scorer", scorer, "-o", str(tmp_path / f"r{index}.jsonl"), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert f"({shown}) |" in proc.stdout, proc.stdout
    header = json.loads((tmp_path / "r0.jsonl").read_text().splitlines()[0])
    assert header["tools"] == ["add"] and header["scorer"] == "numeric" and header["backend"] == "chat"
    # a results file is resumed only by the same run: another scorer is refused, in one line
    refused = agent_cli(*base, "--scorer", "exact", "-o", str(tmp_path / "r0.jsonl"), cwd=tmp_path)
    assert refused.returncode == 2 and "holds a run with scorer = 'numeric', not 'exact'" in refused.stderr


def test_attempts_give_pass_at_k(fake_server, tmp_path):
    tasks = write_jsonl(tmp_path / "tasks.jsonl", [{"id": "a", "task": "Say yes.", "answer": "yes"},
                                                   {"id": "b", "task": "Say no.", "answer": "no"}])
    replies = iter(["\nyes", "\nmaybe", "\nyes", "\nno"])  # attempt 0 of a, b, then attempt 1 of a, b
    fake_server.script(lambda request: next(replies))
    proc = agent_cli("eval", "jsonl", "--data", str(tasks), "--base-url", fake_server.url, "--model",
                     fake_server.model, "--tools", "none", "--attempts", "2", "-c", "1", "-o",
                     str(tmp_path / "r.jsonl"), "--no-transcripts", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "r.summary.json").read_text())
    assert summary["accuracy"] == 0.75 and summary["pass_at_k"] == {"1": 0.75, "2": 1.0}
    assert "| pass@2 | 100.00% |" in proc.stdout


def test_tasks_are_spread_over_several_endpoints(fake_server, tmp_path):
    from fake_glm_server import FakeGLMServer

    tasks = write_jsonl(tmp_path / "tasks.jsonl", [{"id": str(i), "task": f"task {i}", "answer": "ok"}
                                                   for i in range(6)])
    fake_server.script(lambda request: "\nok")
    with FakeGLMServer() as other:
        other.script(lambda request: "\nok")
        proc = agent_cli("eval", "jsonl", "--data", str(tasks), "--base-url", fake_server.url, "--base-url",
                         other.url, "--model", fake_server.model, "--tools", "none", "-c", "2",
                         "-o", str(tmp_path / "r.jsonl"), "--no-transcripts", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert len(fake_server.posts) == len(other.posts) == 3
        records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()[1:]]
        assert {r["endpoint"] for r in records} == {fake_server.url, other.url}


def test_a_missing_dataset_is_one_clear_line(tmp_path):
    proc = agent_cli("eval", "gsm8k", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", cwd=tmp_path)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "openai/gsm8k" in line and "--data PATH" in line and "grade-school-math" in line
    proc = agent_cli("eval", "math23k", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", cwd=tmp_path)
    assert proc.returncode == 2 and "Math23K has no canonical copy" in proc.stderr
    proc = agent_cli("eval", "gsm8k", "--data", str(tmp_path / "nope.jsonl"), "--base-url", "http://127.0.0.1:9/v1",
                     "--model", "m", cwd=tmp_path)
    assert proc.returncode == 2 and "nope.jsonl does not exist" in proc.stderr


@pytest.mark.slow
def test_an_unreachable_server_is_counted_and_retried_on_the_next_run(fake_server, tmp_path):
    tasks = write_jsonl(tmp_path / "tasks.jsonl", [{"id": "a", "task": "Say yes.", "answer": "yes"}])
    common = ["eval", "jsonl", "--data", str(tasks), "--model", fake_server.model, "--tools", "none",
              "--max-retries", "0", "-o", str(tmp_path / "r.jsonl"), "--no-transcripts"]
    down = agent_cli(*common, "--base-url", "http://127.0.0.1:9/v1", cwd=tmp_path)
    assert down.returncode == 1 and "1 of 1 runs ended in an error" in down.stderr
    fake_server.script(["\nyes"])
    up = agent_cli(*common, "--base-url", fake_server.url, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert "| accuracy | 100.00% (1/1) |" in up.stdout


def test_compare_prints_the_paired_difference(tmp_path):
    def results(name, scores):
        lines = [{"type": "header", "kind": "eval", "benchmark": "jsonl"}]
        lines += [{"type": "task", "id": str(i), "attempt": 0, "score": float(s), "correct": bool(s)}
                  for i, s in enumerate(scores)]
        return write_jsonl(tmp_path / name, lines)

    a = results("a.jsonl", [1, 0, 0, 0] * 10)
    b = results("b.jsonl", [1, 1, 0, 0] * 10)
    proc = agent_cli("eval", "compare", str(a), str(b), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "| B − A | +25.00 points |" in proc.stdout and "| tasks in both | 40" in proc.stdout
    assert "95% bootstrap interval | [+" in proc.stdout
    as_json = json.loads(agent_cli("eval", "compare", str(a), str(b), "--json", cwd=tmp_path).stdout)
    assert as_json["difference"] == 0.25 and as_json["ci_low"] > 0


@pytest.mark.parametrize("backend", ["completions", "chat"])
def test_batch_exports_trajectories_in_glm4_chat_format(fake_server, tmp_path, backend):
    (tmp_path / "mytools.py").write_text(MYTOOLS)
    tasks = write_jsonl(tmp_path / "tasks.jsonl", [{"id": "one", "task": "What is 2+3?"},
                                                   {"id": "two", "task": "What is 40+2?"}])
    fake_server.script(adder)
    out, trajectories = tmp_path / "out.jsonl", tmp_path / "train.jsonl"
    proc = agent_cli("batch", str(tasks), "-o", str(out), "--trajectories", str(trajectories), "--base-url",
                     fake_server.url, "--model", fake_server.model, "--backend", backend, "--tools", "none",
                     "--tools-module", "mytools.py", "-c", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["kind"] == "batch" and [r["answer"] for r in records[1:]] == ["2 + 3 = 5.", "40 + 2 = 42."]
    assert "correct" not in records[1] and (tmp_path / "out.summary.json").exists()
    first = json.loads(trajectories.read_text().splitlines()[0])
    assert first["id"] == "one"
    messages = first["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "observation", "assistant"]
    assert messages[0]["tools"][0]["function"]["name"] == "add" and messages[0]["content"] == ""
    assert messages[2]["metadata"] == "add" and json.loads(messages[2]["content"]) == {"a": 2, "b": 3}
    assert messages[3]["content"] == "5" and messages[4] == {"role": "assistant", "metadata": "",
                                                             "content": "2 + 3 = 5."}
    if backend == "completions" and TEMPLATE.exists():  # byte for byte what the model was shown and wrote
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template(conversations=[messages], chat_template=TEMPLATE.read_text("utf-8"))
        last_prompt = [r for r in fake_server.posts if "What is 2+3?" in r.prompt][-1].prompt
        assert rendered[0] == last_prompt + "\n2 + 3 = 5."
    again = agent_cli("batch", str(tasks), "-o", str(out), "--trajectories", str(trajectories), "--base-url",
                      fake_server.url, "--model", fake_server.model, "--backend", backend, "--tools", "none",
                      "--tools-module", "mytools.py", cwd=tmp_path)
    assert again.returncode == 0 and len(trajectories.read_text().splitlines()) == 2  # resumed: nothing twice


@pytest.mark.slow
def test_ray_runs_the_tasks_on_workers_into_the_same_results_file(fake_server, tmp_path):
    pytest.importorskip("ray")
    tasks = write_jsonl(tmp_path / "tasks.jsonl", [{"id": str(i), "task": f"Say {i}.", "answer": str(i)}
                                                   for i in range(6)])
    fake_server.script(lambda request: "\n" + request.prompt.rsplit("Say ", 1)[1].split(".")[0])
    results = tmp_path / "r.jsonl"
    common = ["eval", "jsonl", "--data", str(tasks), "--base-url", fake_server.url, "--model", fake_server.model,
              "--backend", "completions", "--tools", "none", "-c", "2", "-o", str(results)]
    first = agent_cli(*common, "--limit", "4", "--ray", "local", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "| accuracy | 100.00% (4/4) |" in first.stdout and len(fake_server.posts) == 4
    records = [json.loads(line) for line in results.read_text().splitlines()[1:]]
    assert all(Path(r["transcript"]).exists() for r in records)  # written by the workers
    rest = agent_cli(*common, "--ray", "local", cwd=tmp_path)  # resumes: only the last two run
    assert rest.returncode == 0, rest.stderr
    assert "| accuracy | 100.00% (6/6) |" in rest.stdout and len(fake_server.posts) == 6


def test_eval_math_scores_boxed_answers_by_equivalence(fake_server, tmp_path):
    data = write_jsonl(tmp_path / "math500.jsonl", [
        {"problem": "Half of one?", "answer": r"\frac{1}{2}", "subject": "Prealgebra", "unique_id": "a"},
        {"problem": "Roots of x^2-1?", "answer": "(-1, 1)", "subject": "Algebra", "unique_id": "b"},
        {"problem": "Two plus two?", "answer": "4", "subject": "Algebra", "unique_id": "c"}])
    answers = {"Half": r"It is $\boxed{0.5}$.", "Roots": r"$\boxed{\left(-1,1\right)}$", "Two": r"\boxed{5}"}
    fake_server.script(lambda request: "\n" + next(v for k, v in answers.items() if k + " " in request.prompt))
    proc = agent_cli("eval", "math", "--data", str(data), "--base-url", fake_server.url, "--model",
                     fake_server.model, "--backend", "completions", "--tools", "none", "-o", str(tmp_path / "m.jsonl"),
                     "--no-transcripts", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "| accuracy | 66.67% (2/3) |" in proc.stdout and "| Algebra | 2 | 50.00% |" in proc.stdout
    header = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    assert header["subset"] == "math500" and header["scorer"] == "math" and header["tools"] == []
