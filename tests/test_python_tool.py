"""The ``python`` tool: GLM-4 bodies, notebook-like observations, plots as artifacts, one kernel a session."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest

from agent import Agent
from agent.messages import ToolCall
from agent.models import ModelTurn, ScriptedModel
from agent.policy import Policy
from agent.registry import ToolRegistry
from agent.tool import ToolContext
from sandbox import resolve_isolation
from tools.python import PythonTool


def small_policy(**sandbox) -> Policy:
    values = dict(pool_size=1, preload=[], timeout_s=20, interrupt_grace_s=1.5, output_bytes=1000)
    return Policy(sandbox={**values, **sandbox})


@pytest.fixture(scope="module")
def tool():
    python = PythonTool(policy=small_policy())
    yield python
    import asyncio
    asyncio.run(python.aclose())


@pytest.fixture
async def session(tool, tmp_path):
    """A registry and a session context, closed (kernel and all) at the end like the loop does."""
    context = ToolContext(run_id="t", artifacts_dir=tmp_path / "run", policy=tool.policy)
    async with context.resources:
        yield ToolRegistry([tool], policy=tool.policy), context


def call(body: str, n: int = 0) -> ToolCall:
    return ToolCall(id=f"call-{n}", name="python", body=body)


def test_it_is_the_glm4_builtin_python_tool():
    assert PythonTool.name == PythonTool.builtin == "python"
    assert list(PythonTool.forward.__annotations__) == ["code", "context", "return"]


def test_parse_body_takes_raw_or_fenced_code(tool):
    assert tool.parse_body("print(1)") == {"code": "print(1)"}
    assert tool.parse_body("```python\nx = 1\nprint(x)\n```") == {"code": "x = 1\nprint(x)"}
    assert tool.parse_body("```\nprint(2)\n```\nThat runs it.") == {"code": "print(2)"}
    with pytest.raises(ValueError, match="there is no code"):
        tool.parse_body("```python\n```")


async def test_observation_reads_like_a_notebook_and_state_persists(session):
    registry, context = session
    first = await registry.call(call("```python\nx = 17 ** 13\nprint('computing')\nx % 1000\n```"), context)
    assert first.content == "computing\n937" and not first.is_error
    second = await registry.call(call("x // 10**12", 1), context)
    assert second.content == "9904"


async def test_errors_show_their_last_lines(session):
    registry, context = session
    observation = await registry.call(call("import math\nmath.sqrt(-1)"), context)
    assert observation.is_error
    lines = observation.content.splitlines()
    assert lines[-1] == "ValueError: math domain error" and "math.sqrt(-1)" in observation.content
    assert "\x1b" not in observation.content and len(lines) <= 8


async def test_plots_become_run_artifacts(session):
    registry, context = session
    observation = await registry.call(
        call("import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.show()"), context)
    (artifact,) = observation.artifacts
    assert artifact.path.parent == context.artifacts_dir and artifact.tool == "python"
    assert artifact.path.read_bytes().startswith(b"\x89PNG")
    assert observation.content == f"[image: {artifact.path.name}]"


async def test_long_output_is_truncated_for_the_context(session):
    registry, context = session
    observation = await registry.call(call("for i in range(5000):\n    print(i)"), context)
    assert len(observation.content) <= 1000 and "cut" in observation.content
    assert observation.content.rstrip().endswith("4999")


async def test_each_session_gets_its_own_kernel_and_loses_it_at_the_end(tool, tmp_path):
    registry = ToolRegistry([tool], policy=tool.policy)
    one = ToolContext(run_id="a", artifacts_dir=tmp_path / "a", policy=tool.policy)
    two = ToolContext(run_id="b", artifacts_dir=tmp_path / "b", policy=tool.policy)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(one.resources)
        await stack.enter_async_context(two.resources)
        await registry.call(call("owner = 'a'"), one)
        other = await registry.call(call("owner"), two)
        assert other.is_error and "NameError" in other.content
        workdir = one.state["python"].sandbox.workdir
        assert workdir.exists()
    assert not workdir.exists()  # the session's kernel and files are gone with it


async def test_a_timeout_is_reported_to_the_model(tool, tmp_path):
    policy = small_policy(timeout_s=1, pool_size=0)
    python = PythonTool(policy=policy)
    context = ToolContext(run_id="t", artifacts_dir=tmp_path, policy=policy)
    try:
        async with context.resources:
            observation = await ToolRegistry([python], policy=policy).call(call("while True:\n    pass"), context)
            assert observation.is_error
            *_, error, notice = observation.content.splitlines()
            assert error == "KeyboardInterrupt:" and "time limit" in notice
    finally:
        await python.aclose()


async def test_fenced_code_in_json_arguments_runs(session):
    """Chat APIs send {"code": ...}; models still fence the code inside it."""
    registry, context = session
    body = json.dumps({"code": "```python\nprint(1)\n```"})
    observation = await registry.call(ToolCall(id="c", name="python", body=body, syntax="json"), context)
    assert observation.content == "1" and not observation.is_error, observation
    parsed = ToolCall(id="d", name="python", arguments={"code": "```\nprint(2)\n```"}, syntax="json")
    assert (await registry.call(parsed, context)).content == "2"
    empty = await registry.call(ToolCall(id="e", name="python", arguments={"code": "```python\n```"}, syntax="json"), context)
    assert empty.is_error and "there is no code" in empty.content


async def test_two_calls_in_one_turn_share_the_session_kernel_in_order(session):
    """The loop runs a turn's calls concurrently: both must land in the one kernel, as consecutive cells."""
    registry, context = session
    first, second = await asyncio.gather(
        registry.call(call("import time\ntime.sleep(0.3)\nx = 1"), context),
        registry.call(call("y = x + 1\ny", 1), context),
    )
    assert not first.is_error and second.content == "2", (first, second)
    assert (await registry.call(call("print(x, y)", 2), context)).content == "1 2"


def test_an_agent_turn_with_two_python_calls_keeps_both_variables(tmp_path):
    turn = ModelTurn(tool_calls=[ToolCall(id="a", name="python", body="x = 1"),
                                 ToolCall(id="b", name="python", body="y = 2")], stop_reason="tool_calls")
    script = [turn, "python\nprint(x, y)", "\ndone"]
    agent = Agent(model=ScriptedModel(script), tools=["python"], policy=small_policy(), runs_dir=tmp_path)
    try:
        result = agent.run("Set x and y, then print them.")
    finally:
        agent.close()
    assert result.status == "answered", result
    assert [o.is_error for o in result.steps[0].observations] == [False, False], result.steps[0].observations
    (printed,) = result.steps[1].observations
    assert printed.content == "1 2" and not printed.is_error


def test_closing_the_tool_right_away_does_not_wait_for_its_warm_kernel():
    """`agent tools` and runs that never call python build the tool, then close it at once."""
    policy = small_policy(preload=["numpy", "pandas", "sympy", "matplotlib.pyplot"])  # a slow warm-up
    resolve_isolation(policy.sandbox.isolation)  # the once-per-process tier probes are not what is measured
    python = PythonTool(policy=policy)
    began = time.perf_counter()
    asyncio.run(python.aclose())
    took = time.perf_counter() - began
    assert took < 1.0, f"closing took {took:.2f} s"


@pytest.mark.slow
def test_agent_runs_python_and_keeps_the_plot(tmp_path):
    script = [
        "python\n```python\nimport matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [3, 5])\nprint(17**13 % 1000)\n```",
        "\nThe answer is 937.",
    ]
    agent = Agent(model=ScriptedModel(script), tools=["python"], policy=small_policy(), runs_dir=tmp_path)
    try:
        result = agent.run("What is 17**13 mod 1000? Plot something too.")
    finally:
        agent.close()
    assert result.status == "answered" and result.answer == "The answer is 937."
    (observation,) = result.steps[0].observations
    assert observation.content.splitlines()[0] == "937"
    (artifact,) = result.artifacts
    assert artifact.path.is_file() and artifact.path.read_bytes().startswith(b"\x89PNG")
    assert artifact.path.is_relative_to(tmp_path)


def test_raw_code_passed_through_a_chat_api_still_runs(tmp_path):
    """Some servers hand GLM-4's raw body to the chat API as the call's arguments string."""
    import asyncio

    from agent.messages import ToolCall
    from agent.policy import Policy
    from agent.registry import ToolRegistry
    from agent.tool import ToolContext

    policy = Policy()
    registry = ToolRegistry(["python"], policy=policy)
    context = ToolContext(run_id="t", artifacts_dir=tmp_path, policy=policy)

    async def go():
        try:
            return await registry.call(ToolCall(id="c", name="python", body="6 * 7", syntax="json"), context)
        finally:
            await context.resources.aclose()
            await registry.aclose()

    observation = asyncio.run(go())
    assert not observation.is_error and observation.content.strip() == "42"
