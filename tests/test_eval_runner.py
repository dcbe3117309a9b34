"""The runner from Python: concurrency, resuming, retrying errors, endpoints, single-turn runs."""

from __future__ import annotations

import asyncio
import json

from agent.errors import ModelConnectionError
from agent.eval import Run, Task, TaskExecutor, get_scorer, run_local
from agent.models.base import ChatModel, ModelTurn, Usage
from agent.policy import Policy


class Echo(ChatModel):
    """Answers each task with the text after 'Say ', after ``delay`` seconds; counts what it was asked."""

    def __init__(self, delay: float = 0.0, fail: set[str] = frozenset()):
        self.delay, self.fail = delay, set(fail)
        self.calls = 0
        self.in_flight = self.most_in_flight = 0

    async def generate(self, messages, tools, settings, on_token=None):
        self.calls += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            said = messages[-1].content.split("Say ", 1)[1]
            if said in self.fail:
                raise ModelConnectionError("the server is down")
            return ModelTurn(content=said, usage=Usage(prompt_tokens=10, completion_tokens=1))
        finally:
            self.in_flight -= 1


def tasks(n: int) -> list[Task]:
    return [Task(id=f"t{i}", task=f"Say {i}", answer=str(i if i % 4 else -1)) for i in range(n)]


def run_of(path, items, **kwargs) -> Run:
    return Run(items, path, {"type": "header", "kind": "eval", "benchmark": "jsonl", "scorer": "exact",
                             "dataset_hash": "h", "model": "echo"}, scorer=get_scorer("exact"), **kwargs)


def test_runs_are_concurrent_scored_and_resumed(tmp_path):
    model = Echo(delay=0.05)
    run = run_of(tmp_path / "r.jsonl", tasks(12))
    asyncio.run(run_local(run, TaskExecutor([model], [], Policy(), runs_dir=tmp_path, lanes=4), concurrency=4))
    run.close()
    assert model.calls == 12 and model.most_in_flight == 4
    records = run.records()
    assert [r["id"] for r in records] == [f"t{i}" for i in range(12)]  # selection order, whatever order they ended
    assert [r["correct"] for r in records] == [bool(i % 4) for i in range(12)]
    again = run_of(tmp_path / "r.jsonl", tasks(12))
    assert again.pending() == []
    asyncio.run(run_local(again, TaskExecutor([model], [], Policy(), runs_dir=tmp_path), concurrency=4))
    assert model.calls == 12  # nothing ran twice


def test_errors_are_recorded_then_retried(tmp_path):
    run = run_of(tmp_path / "r.jsonl", tasks(3))
    asyncio.run(run_local(run, TaskExecutor([Echo(fail={"1"})], [], Policy(), runs_dir=tmp_path), concurrency=1))
    run.close()
    failed = run.records()[1]
    assert failed["status"] == "error" and "the server is down" in failed["error"] and failed["correct"] is False
    again = run_of(tmp_path / "r.jsonl", tasks(3))
    assert [(task.id, attempt) for task, attempt in again.pending()] == [("t1", 0)]
    asyncio.run(run_local(again, TaskExecutor([Echo()], [], Policy(), runs_dir=tmp_path), concurrency=1))
    again.close()
    assert [r["status"] for r in again.records()] == ["answered"] * 3
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 3 + 1 and json.loads(lines[0])["type"] == "header"  # appended, the last line counts


def test_tasks_go_to_the_least_busy_endpoint(tmp_path):
    slow, fast = Echo(delay=0.2), Echo(delay=0.01)
    run = run_of(tmp_path / "r.jsonl", tasks(12))
    asyncio.run(run_local(run, TaskExecutor([slow, fast], [], Policy(), runs_dir=tmp_path, lanes=2), concurrency=2))
    assert slow.calls + fast.calls == 12 and fast.calls > slow.calls >= 1


def test_single_turn_runs_send_one_request_and_keep_the_calls(tmp_path):
    from agent.messages import ToolCall

    class Caller(ChatModel):
        calls = 0

        async def generate(self, messages, tools, settings, on_token=None):
            Caller.calls += 1
            return ModelTurn(tool_calls=[ToolCall(id="c", name="area", body='{"base": 10, "height": "5"}')],
                             stop_reason="observation")

    area = {"name": "area", "description": "Area.", "parameters": {"type": "dict", "required": ["base"], "properties": {
        "base": {"type": "integer"}, "height": {"type": "integer"}}}}
    task = Task(id="s", task="Area of 10 by 5?", functions=[area], category="simple",
                answer=[{"area": {"base": [10], "height": [5]}}])
    run = Run([task], tmp_path / "b.jsonl", {"type": "header"}, scorer=get_scorer("ast"))
    executor = TaskExecutor([Caller()], [], Policy(), runs_dir=tmp_path, single_turn=True, trajectories=True)
    asyncio.run(run_local(run, executor, concurrency=1))
    (record,) = run.records()
    assert Caller.calls == 1 and record["status"] == "stopped" and record["calls"] == [{"area": {"base": 10,
                                                                                                  "height": "5"}}]
    assert record["correct"] is False and record["note"].startswith("type_error:simple")
