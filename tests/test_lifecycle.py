"""Lifecycle: making an agent starts nothing; resources start on first use or on start(); a session
runs one turn at a time."""

import asyncio
import os
import threading
import time

from agent import Agent, tool
from agent.models import ScriptedModel


def _children() -> set[int]:
    """This process's child processes, from /proc."""
    children = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                        children.add(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return children


def test_constructing_an_agent_starts_nothing():
    before, threads = _children(), threading.active_count()
    agent = Agent(model=ScriptedModel(["\nok"]), tools=["python", "simple_browser"])
    time.sleep(1.0)  # a kernel pool would have spawned its first kernel by now
    assert _children() == before and threading.active_count() == threads
    agent.start()  # warming is asked for: now the kernel starts
    deadline = time.monotonic() + 30
    while _children() == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _children() - before, "start() warms a kernel"
    agent.close()


async def test_concurrent_turns_of_one_session_wait_and_never_mix():
    @tool
    async def pause() -> str:
        """Wait a moment."""
        await asyncio.sleep(0.2)  # the other turn would slip in here
        return "paused"

    def script(messages, tools):
        if messages[-1].role == "user":
            return "pause\n{}"
        asked = [m.content for m in messages if m.role == "user"][-1]
        return f"\nDone with {asked}."

    model = ScriptedModel(script)
    async with Agent(model=model, tools=[pause]) as agent:
        async with agent.chat() as session:
            first, second = await asyncio.gather(session.arun("one"), session.arun("two"))
    assert (first.answer, second.answer) == ("Done with one.", "Done with two.")
    assert [(m.role, m.content) for m in session.messages if m.role != "observation" and not m.tool_calls] == [
        ("user", "one"), ("assistant", "Done with one."), ("user", "two"), ("assistant", "Done with two.")]


def test_a_runtime_built_for_a_test_takes_down_what_it_started_when_closed():
    from agent.policy import Policy
    from agent.runtime import Runtime

    @tool
    def square(x: int) -> int:
        """Square a number (a sync tool: it runs on the runtime's worker threads)."""
        return x * x

    runtime, released = Runtime(), []
    runtime.on_close(lambda: released.append("mine"))
    before = _children()
    agent = Agent(model=ScriptedModel(['square\n{"x": 3}', "python\nprint(2 + 2)", "\nDone."]),
                  tools=[square, "python"], policy=Policy(sandbox={"preload": []}), runtime=runtime)
    result = agent.run("go")
    assert [o.content.strip() for step in result.steps for o in step.observations] == ["9", "4"]
    assert runtime.worker_threads and _children() - before  # a worker thread, and the warm kernel
    runtime.close()
    assert not runtime.worker_threads and released == ["mine"]
    deadline = time.monotonic() + 10
    while _children() - before and time.monotonic() < deadline:  # the sandbox's kernels ended with it
        time.sleep(0.05)
    assert not _children() - before
    agent.close()  # after the runtime: nothing left to close, and no error
