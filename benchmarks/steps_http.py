"""Milliseconds per agent step over a loopback OpenAI-compatible server: glm-agent, smolagents, LangGraph.

One served model for all three: the fake chat-completions server of the tests (``tests/fake_glm_server.py``,
a real HTTP server on 127.0.0.1, in this process) answers each request with one ``tool_calls`` call to
``add`` (arguments vary, so no repeated-call guard fires) until the run has had ``steps - 1`` turns,
then with the final answer: plain content, or a ``final_answer`` call where the request offers
that tool (smolagents ends a run that way). Every side runs the full agent loop through its own OpenAI
client, unstreamed (smolagents' and LangGraph's default), with a plain ``def`` tool:

- **ours**: ``Agent(model=OpenAIChatModel(url, stream=False), tools=[tool(add)]).run(task)`` (the sync
  call, as the peers' are; the tool runs on a worker thread);
- **smolagents**: ``ToolCallingAgent(tools=[tool(add)], model=OpenAIServerModel(...)).run(task)``;
- **LangGraph**: ``create_react_agent(ChatOpenAI(...), [tool(add)]).invoke(...)``.

Each side lives in a child process of its own (the peers with their venvs, ``benchmarks/.venv-smolagents``
and ``benchmarks/.venv-langgraph``, installed on first use), builds its agent once, runs two warm-up runs
(imports, connections, first-call caches are not timed) and then runs as told: the lengths and sides take
turns, sample after sample, so a busy moment of the machine hits them all. A step's time is the run's
wall time divided by its steps: the framework's loop, its client building and sending the request, the
server reading it and answering, and the tool. RSS is each child's peak (``ru_maxrss``), after all runs.

    python benchmarks/steps_http.py [--steps 5,20,80] [--samples 5] [--no-smolagents] [--no-langgraph]

``--steps 5,20,80,320`` shows how a step's cost grows with the conversation. The last line is
``steps_http: steps=5/20/80 samples=N ours_ms=a/b/c smolagents_ms=... langgraph_ms=... ratio_smolagents=...
ratio_langgraph=... ours_rss_mb=... smolagents_rss_mb=... langgraph_rss_mb=...``: median ms per step at each
length; ratio = peer / ours (above 1: we are faster); ``n/a`` for a peer that could not be run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from peers import peer_python

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

WARMUP_STEPS = 5
TASK = "Add numbers, steps={steps}."  # the server reads the run's length back from the task

# ---------------------------------------------------------------------------------------------------
# The children: each reads a length per line from stdin, runs one agent run of that many steps and
# answers one JSON line {"ms": wall ms of the run, "rss_mb": peak RSS so far}.

CHILD_COMMON = r'''
import json, resource, sys, time

url, served_model = sys.argv[1:3]
TASK = "Add numbers, steps={steps}."


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first integer
        b: the second integer
    """
    return a + b


def serve(run):
    """Run ``run(steps)`` for each length read from stdin, after two untimed warm-up runs."""
    run(%(warmup)d)
    run(%(warmup)d)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        steps = int(line)
        t0 = time.perf_counter()
        run(steps)
        elapsed = time.perf_counter() - t0
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print(json.dumps({"ms": elapsed * 1e3, "rss_mb": rss_mb}), flush=True)
''' % {"warmup": WARMUP_STEPS}

OURS_CHILD = CHILD_COMMON + r'''
from agent import Agent, Policy, tool
from agent.models import OpenAIChatModel
from agent.policy import AgentLimits, ToolSettings

limit = 1000  # every run ends on the model's answer, never on a budget
policy = Policy(name="bench", agent=AgentLimits(max_steps=limit, max_tool_calls=limit), tools=ToolSettings(enabled=[]))
agent = Agent(model=OpenAIChatModel(url, served_model, api_key="bench", stream=False), tools=[tool(add)], policy=policy)


def run(steps):
    result = agent.run(TASK.format(steps=steps))
    if result.status != "answered" or result.answer != "Done." or len(result.steps) != steps:
        raise SystemExit(f"unexpected run: status={result.status!r} answer={result.answer!r} "
                         f"steps={len(result.steps)} error={result.error!r}")


serve(run)
'''

SMOLAGENTS_CHILD = CHILD_COMMON + r'''
from smolagents import OpenAIServerModel, ToolCallingAgent, tool
from smolagents.memory import ActionStep
from smolagents.monitoring import LogLevel

model = OpenAIServerModel(model_id=served_model, api_base=url, api_key="bench")
agent = ToolCallingAgent(tools=[tool(add)], model=model, max_steps=1000, verbosity_level=LogLevel.OFF)


def run(steps):
    answer = agent.run(TASK.format(steps=steps))
    actions = [s for s in agent.memory.steps if isinstance(s, ActionStep)]
    errors = [s.error for s in actions if s.error is not None]
    if answer != "Done." or len(actions) != steps or errors:
        raise SystemExit(f"unexpected smolagents run: answer={answer!r} steps={len(actions)} errors={errors[:2]}")


serve(run)
'''

LANGGRAPH_CHILD = CHILD_COMMON + r'''
import warnings

from langchain_core.messages import ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

with warnings.catch_warnings():  # create_react_agent is deprecated for langchain's create_agent (another package)
    warnings.simplefilter("ignore")
    from langgraph.prebuilt import create_react_agent

graph = create_react_agent(ChatOpenAI(model=served_model, base_url=url, api_key="bench"), [tool(add)])


def run(steps):
    state = graph.invoke({"messages": [("user", TASK.format(steps=steps))]},
                         config={"recursion_limit": 2 * steps + 5})
    messages = state["messages"]
    results = [m for m in messages if isinstance(m, ToolMessage)]
    if messages[-1].content != "Done." or len(results) != steps - 1 or any(m.status == "error" for m in results):
        raise SystemExit(f"unexpected langgraph run: answer={messages[-1].content!r} tool results={len(results)}")


serve(run)
'''

# ---------------------------------------------------------------------------------------------------
# The served model


def reply(request: Any) -> Any:
    """A call to ``add`` until the run has had ``steps - 1`` turns, then the answer.

    A turn is counted by its assistant message: smolagents sends tool results back as user messages."""
    from fake_glm_server import Reply

    messages = request.body.get("messages") or []
    task = next((str(m.get("content")) for m in messages if m.get("role") == "user"), "")
    found = re.search(r"steps=(\d+)", task)
    steps = int(found.group(1)) if found else 1
    turns = sum(m.get("role") == "assistant" for m in messages)
    if turns < steps - 1:
        return Reply(tool_calls=[("add", {"a": turns, "b": 2})])
    offered = {t.get("function", {}).get("name") for t in request.body.get("tools") or []}
    if "final_answer" in offered:
        return Reply(tool_calls=[("final_answer", {"answer": "Done."})])
    return Reply(content="Done.")


# ---------------------------------------------------------------------------------------------------
# Running the sides


class Side:
    """One framework in its child process, answering "run N steps" requests over stdin/stdout."""

    def __init__(self, name: str, python: Path, source: str, url: str, model: str, env: dict[str, str]):
        self.name = name
        self.script = tempfile.NamedTemporaryFile("w", suffix=f"_{name}_steps_http.py", delete=False)
        self.script.write(source)
        self.script.close()
        self.errors = tempfile.TemporaryFile("w+")  # a file, not a pipe: warnings never fill it and block the child
        self.proc = subprocess.Popen([str(python), self.script.name, url, model], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.errors, text=True, env=env,
                                     cwd=tempfile.gettempdir())
        self.times: dict[int, list[float]] = {}
        self.rss_mb = 0.0
        self._answer()  # the warm-up runs are done

    def run(self, steps: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{steps}\n")
        self.proc.stdin.flush()
        answer = self._answer()
        self.times.setdefault(steps, []).append(answer["ms"] / steps)
        self.rss_mb = answer["rss_mb"]

    def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.errors.seek(0)
            tail = self.errors.read().strip().splitlines()[-3:]
            raise RuntimeError(f"the {self.name} child ended: {' | '.join(tail) or 'no output'}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.errors.close()
        os.unlink(self.script.name)


def child_env(ours: bool) -> dict[str, str]:
    env = {**os.environ, "PYTHONNOUSERSITE": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "LANGSMITH_TRACING": "false", "OPENAI_API_KEY": "bench"}
    env.pop("PYTHONPATH", None)
    if ours:
        env["PYTHONPATH"] = str(ROOT)  # this checkout's agent package
    return env


def peers(args: argparse.Namespace) -> list[tuple[str, Path | None, str, str]]:
    """(name, python or None, why not, child source) for each peer asked for, installing what is missing."""
    wanted = []
    if not args.no_smolagents:
        # smolagents[openai]: the core (never torch) and the openai client OpenAIServerModel needs
        wanted.append(("smolagents", ".venv-smolagents", "smolagents[openai]", "smolagents, openai",
                       SMOLAGENTS_CHILD))
    if not args.no_langgraph:
        wanted.append(("langgraph", ".venv-langgraph", "langgraph langchain-openai", "langgraph, langchain_openai",
                       LANGGRAPH_CHILD))
    found = []
    for name, venv, requirement, modules, source in wanted:
        python, why = peer_python(venv, requirement, modules)
        found.append((name, python, why, source))
    return found


def summary(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} ms (min {min(times):.2f}, max {max(times):.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="5,20,80", help="run lengths in steps, comma-separated")
    parser.add_argument("--samples", type=int, default=5, help="timed runs per side and length")
    parser.add_argument("--no-smolagents", action="store_true", help="skip the smolagents side")
    parser.add_argument("--no-langgraph", action="store_true", help="skip the LangGraph side")
    args = parser.parse_args(argv)
    lengths = [int(n) for n in args.steps.split(",")]

    from fake_glm_server import FakeGLMServer

    missing: dict[str, str] = {}
    with FakeGLMServer() as fake:
        fake.script(reply)
        sides = [Side("ours", Path(sys.executable), OURS_CHILD, fake.url, fake.model, child_env(ours=True))]
        for name, python, why, source in peers(args):
            try:
                if python is None:
                    raise RuntimeError(why)
                sides.append(Side(name, python, source, fake.url, fake.model, child_env(ours=False)))
            except RuntimeError as exc:
                missing[name] = str(exc)
                print(f"{name}: NOT MEASURED: {exc}", flush=True)
        print(f"steps_http: {'/'.join(map(str, lengths))} steps, {args.samples} samples each, "
              f"sides {', '.join(s.name for s in sides)} (warmed up)", flush=True)
        for _ in range(args.samples):
            for steps in lengths:
                for side in list(sides):
                    try:
                        side.run(steps)
                    except RuntimeError as exc:
                        missing[side.name] = str(exc)
                        print(f"{side.name}: NOT MEASURED: {exc}", flush=True)
                        sides.remove(side)
                    fake.requests.clear()  # the server records every request: keep its memory flat
        for side in sides:
            side.close()

    measured = {side.name: side for side in sides}
    ours = measured.get("ours")
    if ours is None:
        print(f"steps_http: ours failed: {missing.get('ours')}")
        return 1
    for side in sides:
        for steps in lengths:
            print(f"  {side.name:<10} {steps:>4} steps: {summary(side.times[steps])} per step")
        print(f"  {side.name:<10} peak RSS {side.rss_mb:.0f} MB")

    def per_length(name: str) -> str:
        side = measured.get(name)
        return "/".join(f"{statistics.median(side.times[n]):.2f}" for n in lengths) if side else "n/a"

    def ratios(name: str) -> str:
        side = measured.get(name)
        if side is None:
            return "n/a"
        return "/".join(f"{statistics.median(side.times[n]) / statistics.median(ours.times[n]):.1f}" for n in lengths)

    def rss(name: str) -> str:
        return f"{measured[name].rss_mb:.0f}" if name in measured else "n/a"

    print(f"steps_http: steps={'/'.join(map(str, lengths))} samples={args.samples} ours_ms={per_length('ours')} "
          f"smolagents_ms={per_length('smolagents')} langgraph_ms={per_length('langgraph')} "
          f"ratio_smolagents={ratios('smolagents')} ratio_langgraph={ratios('langgraph')} "
          f"ours_rss_mb={rss('ours')} smolagents_rss_mb={rss('smolagents')} langgraph_rss_mb={rss('langgraph')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
