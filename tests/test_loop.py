"""The agent loop, driven by scripted models: budgets, concurrency, repeats, approvals, sessions, events."""

import asyncio
import json

import pytest

from agent import Agent, Policy, ToolContext, tool
from agent.errors import ModelConnectionError
from agent.events import RunFinished
from agent.messages import ToolCall
from agent.models import ModelTurn, ScriptedModel
from agent.transcript import read_transcript


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def policy(**agent_limits):
    return Policy(agent=agent_limits)


def test_tool_call_then_answer():
    model = ScriptedModel(['\nLet me add.<|assistant|>add\n{"a": 2, "b": 3}', "\n2 + 3 = 5."])
    result = Agent(model=model, tools=[add]).run("What is 2+3?")
    assert result.status == "answered" and result.answer == "2 + 3 = 5."
    first, second = result.steps
    assert first.thought == "Let me add." and first.observations[0].content == "5"
    assert second.tool_calls == []
    # The model saw the observation in its second turn.
    assert model.seen[1][-1].role == "observation" and model.seen[1][-1].content == "5"


def test_max_steps_gives_one_last_turn_without_tools():
    calls = []

    @tool
    def probe(n: int) -> str:
        """Probe."""
        calls.append(n)
        return "nothing yet"

    outputs = [f'probe\n{{"n": {i}}}' for i in range(3)] + ['probe\n{"n": 99}']
    result = Agent(model=ScriptedModel(outputs), tools=[probe], policy=policy(max_steps=3)).run("go")
    assert result.status == "budget_exhausted"
    assert calls == [0, 1, 2]  # the last turn's call was not run
    assert len(result.steps) == 4


def test_budget_note_reaches_the_model_and_its_answer_is_kept():
    model = ScriptedModel(['add\n{"a": 1, "b": 1}', '\nI ran out, but 1+1=2.'])
    result = Agent(model=model, tools=[add], policy=policy(max_tool_calls=1, max_steps=5)).run("go")
    assert result.status == "budget_exhausted" and result.answer == "I ran out, but 1+1=2."
    last_prompt = model.seen[-1][-1]
    assert last_prompt.role == "user" and "limit of 1 tool calls" in last_prompt.content


def test_wall_time_budget_stops_a_slow_tool():
    @tool
    async def sleepy() -> str:
        """Sleeps."""
        await asyncio.sleep(30)
        return "never"

    model = ScriptedModel(["sleepy\n{}", "\nGave up waiting."])
    result = Agent(model=model, tools=[sleepy], policy=policy(wall_time_s=0.3)).run("go")
    assert result.status == "budget_exhausted" and result.answer == "Gave up waiting."
    assert "wall-time limit" in result.steps[0].observations[0].content


def test_several_calls_in_one_turn_run_concurrently():
    barrier = {"count": 0}

    @tool
    async def meet(name: str) -> str:
        """Wait until both callers have arrived (deadlocks unless the calls run concurrently)."""
        barrier["count"] += 1
        for _ in range(200):
            if barrier["count"] >= 2:
                return f"{name} met"
            await asyncio.sleep(0.01)
        return f"{name} alone"

    turn = ModelTurn(tool_calls=[ToolCall(id="a", name="meet", arguments={"name": "x"}, syntax="json"),
                                 ToolCall(id="b", name="meet", arguments={"name": "y"}, syntax="json")],
                     stop_reason="tool_calls")
    result = Agent(model=ScriptedModel([turn, "\ndone"]), tools=[meet]).run("go")
    assert [o.content for o in result.steps[0].observations] == ["x met", "y met"]
    assert [o.call_id for o in result.steps[0].observations] == ["a", "b"]


def test_same_call_three_times_in_a_row_is_stopped():
    outputs = ['add\n{"a": 1, "b": 2}'] * 3 + ['add\n{"a": 2, "b": 2}', "\nfine"]
    result = Agent(model=ScriptedModel(outputs), tools=[add]).run("go")
    contents = [s.observations[0].content for s in result.steps[:4]]
    assert contents[:2] == ["3", "3"]
    assert "made 3 times in a row" in contents[2] and result.steps[2].observations[0].is_error
    assert contents[3] == "4" and result.answer == "fine"


def test_approval_required():
    p = Policy(tools={"require_approval": ["add"]})
    asked = []
    unasked = Agent(model=ScriptedModel(['add\n{"a": 1, "b": 2}', "\nok"]), tools=[add], policy=p).run("go")
    assert unasked.steps[0].observations[0].content == ("Not run: calls to 'add' need the user's approval, and no "
                                                        "one could be asked.")
    denied = Agent(model=ScriptedModel(['add\n{"a": 1, "b": 2}', "\nok"]), tools=[add], policy=p,
                   approve=lambda call: False).run("go")
    assert denied.steps[0].observations[0].content == "Not run: the user did not approve this call to 'add'."

    async def approve(call):
        asked.append(call.name)
        return True

    allowed = Agent(model=ScriptedModel(['add\n{"a": 1, "b": 2}', "\nok"]), tools=[add], policy=p,
                    approve=approve).run("go")
    assert allowed.steps[0].observations[0].content == "3" and asked == ["add"]


def test_chat_session_keeps_history_and_tool_state():
    @tool
    def remember(value: str, ctx: ToolContext) -> str:
        """Remember a value for the session."""
        ctx.state.setdefault("memory", []).append(value)
        return ",".join(ctx.state["memory"])

    model = ScriptedModel(['remember\n{"value": "a"}', "\nnoted a", 'remember\n{"value": "b"}', "\nnoted b"])
    agent = Agent(model=model, tools=[remember])
    with agent.chat() as session:
        first = session.run("remember a")
        second = session.run("remember b")
    assert first.answer == "noted a" and second.answer == "noted b"
    assert second.steps[0].observations[0].content == "a,b"
    assert [m.role for m in model.seen[-1]] == ["user", "assistant", "observation", "assistant", "user",
                                                 "assistant", "observation"]
    assert first.run_id != second.run_id


def test_events_and_streamed_tokens():
    agent = Agent(model=ScriptedModel(['add\n{"a": 1, "b": 2}', "\nThe sum is 3."]), tools=[add])
    events = list(agent.stream("go"))
    types = [e.type for e in events]
    assert types[0] == "run_started" and types[-2:] == ["final_answer", "run_finished"]
    assert types.index("tool_call") < types.index("tool_result") < types.index("final_answer")
    tokens = "".join(e.text for e in events if e.type == "token")
    assert tokens == 'add\n{"a": 1, "b": 2}\nThe sum is 3.'
    assert isinstance(events[-1], RunFinished) and events[-1].result.answer == "The sum is 3."


async def test_async_core_and_astream():
    agent = Agent(model=ScriptedModel(['add\n{"a": 4, "b": 5}', "\n9"]), tools=[add])
    result = await agent.arun("go")
    assert result.answer == "9"
    agent = Agent(model=ScriptedModel(["\nhi"]), tools=[])
    types = [event.type async for event in agent.astream("go")]
    assert types[-1] == "run_finished"


async def test_sync_run_works_inside_a_running_event_loop():
    """As in a Jupyter notebook, where an event loop is already running."""
    agent = Agent(model=ScriptedModel(["\nhi"]), tools=[])
    assert agent.run("go").answer == "hi"
    agent.close()


def test_model_failure_is_a_clear_error_result():
    class Down(ScriptedModel):
        async def generate(self, *args, **kwargs):
            raise ModelConnectionError("Cannot reach http://127.0.0.1:9/v1: connection refused.")

    result = Agent(model=Down([]), tools=[add]).run("go")
    assert result.status == "error" and result.error == "Cannot reach http://127.0.0.1:9/v1: connection refused."


def test_policy_enables_builtins():
    p = Policy(tools={"enabled": []})
    from agent.errors import ToolDefinitionError

    with pytest.raises(ToolDefinitionError, match="does not enable the 'python' tool"):
        Agent(model=ScriptedModel([]), tools=["python"], policy=p)


def test_transcript_is_written_as_it_goes_and_replays(tmp_path):
    path = tmp_path / "run.jsonl"
    model = ScriptedModel(['\nthinking<|assistant|>add\n{"a": 1, "b": 2}', "\nThree."])
    original = Agent(model=model, tools=[add], transcript=path).run("go")
    lines = path.read_text().splitlines()
    assert all(json.loads(line)["type"] != "token" for line in lines)
    events = read_transcript(path)
    assert events[0].type == "run_started" and events[-1].type == "run_finished"
    replayed = Agent(model=ScriptedModel.from_transcript(path), tools=[add]).run("go")
    assert replayed.answer == original.answer == "Three."
    assert replayed.steps[0].thought == "thinking"
    assert replayed.steps[0].observations[0].content == "3"


def test_citations_resolve_from_observations():
    from agent import Citation, ToolOutput

    @tool
    def lookup(q: str) -> ToolOutput:
        """Look up."""
        return ToolOutput(text="【0†Example】 ...", metadata="browser_result",
                          citations=[Citation(id="0", url="https://example.com/", title="Example"),
                                     Citation(id="1", url="https://other.example/", title="Other")])

    result = Agent(model=ScriptedModel(['lookup\n{"q": "x"}', "\nSee 【0†Example】 and 【7†missing】."]),
                   tools=[lookup]).run("go")
    assert [c.url for c in result.citations] == ["https://example.com/"]


def test_scripted_model_running_out_is_an_error_result():
    result = Agent(model=ScriptedModel(['add\n{"a": 1, "b": 2}']), tools=[add]).run("go")
    assert result.status == "error" and "ran out of outputs" in result.error


def test_wall_time_cuts_concurrent_calls_and_keeps_the_conversation_whole():
    @tool
    async def quick() -> str:
        """Returns at once."""
        return "quick done"

    @tool
    async def stuck() -> str:
        """Never returns in time."""
        await asyncio.sleep(30)
        return "never"

    turn = ModelTurn(tool_calls=[ToolCall(id="s", name="stuck", arguments={}, syntax="json"),
                                 ToolCall(id="q", name="quick", arguments={}, syntax="json")],
                     stop_reason="tool_calls")
    model = ScriptedModel([turn, "\nPartial answer."])
    result = Agent(model=model, tools=[quick, stuck], policy=policy(wall_time_s=0.3)).run("go")
    assert result.status == "budget_exhausted" and result.answer == "Partial answer."
    observations = result.steps[0].observations
    assert [o.call_id for o in observations] == ["s", "q"]  # in call order, each call answered once
    assert observations[0].is_error and "wall-time limit" in observations[0].content
    assert observations[1].content == "quick done"
    last_seen = model.seen[-1]
    assert [m.tool_call_id for m in last_seen if m.role == "observation"] == ["s", "q"]


def test_a_call_in_the_last_turn_is_not_left_unanswered_in_the_history():
    model = ScriptedModel(['add\n{"a": 1, "b": 1}', '\nOut of steps.<|assistant|>add\n{"a": 2, "b": 2}',
                           "\nSecond answer."])
    agent = Agent(model=model, tools=[add], policy=policy(max_steps=1))
    with agent.chat() as session:
        first = session.run("first")
        second = session.run("second")
    assert first.status == "budget_exhausted" and first.answer == "Out of steps."
    assert second.answer == "Second answer."
    history = model.seen[-1]
    calls = {c.id for m in history for c in m.tool_calls}
    answered = {m.tool_call_id for m in history if m.role == "observation"}
    assert calls == answered and len(calls) == 1


async def test_close_works_inside_a_running_event_loop():
    agent = Agent(model=ScriptedModel([]), tools=[add])
    agent.close()  # a notebook cell calling the sync API while its own loop runs
