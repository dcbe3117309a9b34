"""Framework overhead per agent step: glm-agent's loop next to smolagents' ``ToolCallingAgent``.

Both agents run the same script: a fake model that makes 19 calls to a trivial ``add`` tool (arguments
vary, so no repeated-call guard fires) and then answers, i.e. 20 steps. The model and the tool cost
next to nothing, so the wall time of a run divided by its steps is what the framework itself costs per
step. Each side is warmed up, then timed over several runs; the median is reported.

smolagents is installed into ``benchmarks/.venv-smolagents`` (never torch) the first time and runs in
a child process with that venv's python; the child prints its figures as JSON.

    python benchmarks/loop_overhead.py [--reps 50] [--warmup 10] [--calls 19] [--no-smolagents]

The last line is ``loop_overhead: tool=plain-def steps=N ours_ms_per_step=X smolagents_ms_per_step=Y ratio=Z
async_tool_ms_per_step=W``: both sides with the same kind of tool, a plain ``def`` (smolagents' ``@tool``
takes one; ours runs it in a worker thread so it cannot block the event loop); ratio = smolagents / ours,
``n/a`` when smolagents could not be run. Ours with an ``async def`` tool (no thread) is shown apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peers import peer_python

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-smolagents"
TARGET_MS = 0.5

# ---------------------------------------------------------------------------------------------------
# Ours


def _build_agent(calls: int, sync_tool: bool = False):
    """An agent with a trivial ``add`` tool. ``async def`` is how a non-blocking tool is written here;
    a plain ``def`` tool runs in a worker thread (so a slow one never blocks the loop), which costs a
    thread hop per call: ``sync_tool`` measures that too."""
    from agent import Agent, Policy, tool
    from agent.models import ScriptedModel
    from agent.policy import AgentLimits, ToolSettings

    async def add(a: int, b: int) -> int:
        """Add two integers.

        Args:
            a: the first integer
            b: the second integer
        """
        return a + b

    def add_sync(a: int, b: int) -> int:
        return a + b

    if sync_tool:
        add_sync.__doc__ = add.__doc__
        add = tool(add_sync, name="add")
    else:
        add = tool(add)

    outputs = [f'add\n{{"a": {i}, "b": 2}}' for i in range(calls)] + ["\nDone."]
    policy = Policy(name="bench", agent=AgentLimits(max_steps=calls + 6, max_tool_calls=calls + 10),
                    tools=ToolSettings(enabled=[]))
    return Agent(model=ScriptedModel(outputs), tools=[add], policy=policy)


def _check(result, calls: int) -> int:
    if result.status != "answered" or result.answer != "Done." or len(result.steps) != calls + 1:
        raise RuntimeError(f"unexpected run: status={result.status!r} answer={result.answer!r} "
                           f"steps={len(result.steps)} error={result.error!r}")
    if any(o.is_error for s in result.steps for o in s.observations):
        raise RuntimeError("a tool call came back as an error")
    return len(result.steps)


def bench_ours_async(calls: int, warmup: int, reps: int, sync_tool: bool = False) -> dict:
    """``await agent.arun(...)`` in one event loop: the core number."""

    async def main() -> dict:
        times, steps = [], 0
        for i in range(warmup + reps):
            agent = _build_agent(calls, sync_tool)  # a fresh agent and script per run, built outside the timing
            t0 = time.perf_counter()
            result = await agent.arun("Add numbers.")
            elapsed = time.perf_counter() - t0
            await agent.aclose()
            steps = _check(result, calls)
            if i >= warmup:
                times.append(elapsed)
        return _summary(times, steps)

    return asyncio.run(main())


def bench_ours_sync(calls: int, warmup: int, reps: int) -> dict:
    """``agent.run(...)``: the sync twin, which hops onto the agent's private loop thread."""
    times, steps = [], 0
    for i in range(warmup + reps):
        agent = _build_agent(calls)
        t0 = time.perf_counter()
        result = agent.run("Add numbers.")
        elapsed = time.perf_counter() - t0
        agent.close()
        steps = _check(result, calls)
        if i >= warmup:
            times.append(elapsed)
    return _summary(times, steps)


def _summary(times: list[float], steps: int) -> dict:
    median = statistics.median(times)
    return {"steps": steps, "reps": len(times), "median_run_ms": median * 1e3,
            "min_run_ms": min(times) * 1e3, "ms_per_step": median * 1e3 / steps}


# ---------------------------------------------------------------------------------------------------
# smolagents, in its own venv

SMOL_CHILD = r'''
import json, statistics, sys, time
calls, warmup, reps = (int(x) for x in sys.argv[1:4])

import smolagents
from smolagents import ToolCallingAgent, tool
from smolagents.memory import ActionStep
from smolagents.models import ChatMessage, ChatMessageToolCall, ChatMessageToolCallFunction, MessageRole, Model
from smolagents.monitoring import LogLevel, TokenUsage


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first integer
        b: the second integer
    """
    return a + b


class FakeModel(Model):
    """Returns one tool call per turn: ``calls`` calls to add, then a final_answer call."""

    def __init__(self, calls):
        super().__init__(model_id="fake-model")
        self.script = [("add", {"a": i, "b": 2}) for i in range(calls)] + [("final_answer", {"answer": "Done."})]
        self.index = 0

    def generate(self, messages, stop_sequences=None, response_format=None, tools_to_call_from=None, **kwargs):
        name, arguments = self.script[self.index]
        self.index += 1
        call = ChatMessageToolCall(id=f"call_{self.index}", type="function",
                                   function=ChatMessageToolCallFunction(name=name, arguments=dict(arguments)))
        return ChatMessage(role=MessageRole.ASSISTANT, content="", tool_calls=[call],
                           token_usage=TokenUsage(input_tokens=10, output_tokens=5))


times, steps = [], 0
for i in range(warmup + reps):
    agent = ToolCallingAgent(tools=[add], model=FakeModel(calls), max_steps=calls + 6, verbosity_level=LogLevel.OFF)
    t0 = time.perf_counter()
    answer = agent.run("Add numbers.")
    elapsed = time.perf_counter() - t0
    steps = sum(isinstance(s, ActionStep) for s in agent.memory.steps)
    errors = [s.error for s in agent.memory.steps if isinstance(s, ActionStep) and s.error is not None]
    if answer != "Done." or steps != calls + 1 or errors:
        raise SystemExit(f"unexpected smolagents run: answer={answer!r} steps={steps} errors={errors[:2]}")
    if i >= warmup:
        times.append(elapsed)
median = statistics.median(times)
print(json.dumps({"version": smolagents.__version__, "steps": steps, "reps": len(times),
                  "median_run_ms": median * 1e3, "min_run_ms": min(times) * 1e3,
                  "ms_per_step": median * 1e3 / steps}))
'''


def ensure_smolagents() -> tuple[Path | None, str]:
    """The venv's python with smolagents importable, installing it if missing; else (None, why)."""
    # smolagents' core needs no torch; only it is installed (no extras), so torch never lands there.
    return peer_python(VENV.name, "smolagents", "smolagents")


def bench_smolagents(python: Path | None, why: str, calls: int, warmup: int, reps: int) -> tuple[dict | None, str]:
    if python is None:
        return None, why
    with tempfile.NamedTemporaryFile("w", suffix="_smol_child.py", delete=False) as handle:
        handle.write(SMOL_CHILD)
    try:
        env = {**os.environ, "PYTHONNOUSERSITE": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
        env.pop("PYTHONPATH", None)
        proc = subprocess.run([str(python), handle.name, str(calls), str(warmup), str(reps)],
                              capture_output=True, text=True, timeout=600, env=env, cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        return None, "the smolagents child timed out"
    finally:
        os.unlink(handle.name)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return None, f"the smolagents child failed: {' | '.join(tail)}"
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1]), ""
    except (json.JSONDecodeError, IndexError):
        return None, f"the smolagents child printed no JSON: {proc.stdout[-300:]!r}"


# ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=19, help="tool calls before the answer (steps = calls + 1)")
    parser.add_argument("--reps", type=int, default=50, help="timed runs per side")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs first")
    parser.add_argument("--no-smolagents", action="store_true", help="skip the smolagents side")
    args = parser.parse_args(argv)

    python, why = (None, "skipped (--no-smolagents)") if args.no_smolagents else ensure_smolagents()
    print(f"loop overhead: {args.calls} calls to a trivial tool + 1 answer = {args.calls + 1} steps; "
          f"{args.warmup} warm-up runs, median of {args.reps}")
    ours = bench_ours_async(args.calls, args.warmup, args.reps)
    print(f"  glm-agent  await agent.arun(), async tool: {ours['ms_per_step']:.3f} ms/step "
          f"(run {ours['median_run_ms']:.2f} ms median, {ours['min_run_ms']:.2f} min, {ours['steps']} steps)")
    threaded = bench_ours_async(args.calls, args.warmup, args.reps, sync_tool=True)
    print(f"  glm-agent  await agent.arun(), sync tool in a worker thread: {threaded['ms_per_step']:.3f} ms/step "
          f"(run {threaded['median_run_ms']:.2f} ms median, {threaded['min_run_ms']:.2f} min)")
    sync = bench_ours_sync(args.calls, args.warmup, args.reps)
    print(f"  glm-agent  agent.run() (sync): {sync['ms_per_step']:.3f} ms/step "
          f"(run {sync['median_run_ms']:.2f} ms median, {sync['min_run_ms']:.2f} min, {sync['steps']} steps)")

    smol, why = bench_smolagents(python, why, args.calls, args.warmup, args.reps)
    if smol is not None:
        print(f"  smolagents {smol['version']} ToolCallingAgent.run(): {smol['ms_per_step']:.3f} ms/step "
              f"(run {smol['median_run_ms']:.2f} ms median, {smol['min_run_ms']:.2f} min, {smol['steps']} steps)")
        ratio = smol["ms_per_step"] / threaded["ms_per_step"]  # like with like: a plain def tool on both sides
        print(f"  ratio smolagents / glm-agent, plain def tool on both sides: {ratio:.1f}x  "
              f"(ours with an async tool: {smol['ms_per_step'] / ours['ms_per_step']:.1f}x, "
              f"sync twin agent.run(): {smol['ms_per_step'] / sync['ms_per_step']:.1f}x)")
    else:
        ratio = None
        print(f"  smolagents: NOT MEASURED: {why}")

    # the loop's own budget; the comparison with peers that matters is over HTTP (steps_http.py), so no ratio target
    met = threaded["ms_per_step"] <= TARGET_MS
    print(f"  target {'met' if met else 'NOT met'}: per step {'<=' if met else '>'} {TARGET_MS} ms")
    smol_text = f"{smol['ms_per_step']:.3f}" if smol is not None else "n/a"
    ratio_text = f"{ratio:.1f}" if ratio is not None else "n/a"
    print(f"loop_overhead: tool=plain-def steps={args.calls + 1} reps={args.reps} "
          f"ours_ms_per_step={threaded['ms_per_step']:.3f} smolagents_ms_per_step={smol_text} ratio={ratio_text} "
          f"async_tool_ms_per_step={ours['ms_per_step']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
