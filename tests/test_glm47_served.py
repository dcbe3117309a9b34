"""GLM-4.7-style completions played by a loopback server through both served backends (issue 13).

``--backend completions`` reads the raw text here; ``--backend chat`` gets native ``tool_calls`` from a
server running the glm47/glm45 parsers, or, where a server's parser missed a call (vLLM's streaming
ones do) or it runs none, the XML left in ``content``, which is read here too. Each script ends in an
answer, so every malformation is shown to be survivable, not only readable.
"""

from __future__ import annotations

import json

import pytest

from fake_glm_server import Reply

from agent import Agent, tool
from agent.models import CompletionsModel, OpenAIChatModel
from agent.protocol.glm45 import THINK_CLOSE, GLM47Format

CALLS: list[tuple[str, dict]] = []


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first
        b: the second
    """
    CALLS.append(("add", {"a": a, "b": b}))
    return a + b


@tool
def get_time() -> str:
    """The time now."""
    CALLS.append(("get_time", {}))
    return "12:00"


@tool
def note(text: str, tags: list[str], pinned: bool = False) -> str:
    """Keep a note.

    Args:
        text: what to keep
        tags: labels
        pinned: keep it on top
    """
    CALLS.append(("note", {"text": text, "tags": tags, "pinned": pinned}))
    return "kept"


def pair(key: str, value: str) -> str:
    return f"<arg_key>{key}</arg_key><arg_value>{value}</arg_value>"


TAGS = '["a", "b c"]'
# name: (completions after the prompt's opening <think>, the tool calls the tools saw, the answer)
SCRIPTS: dict[str, tuple[list[str], list[tuple[str, dict]], str]] = {
    "two calls in one turn, one without arguments": ([
        f"Sum, then the time.</think><tool_call>add{pair('a', '2')}{pair('b', '3')}</tool_call><tool_call>get_time</tool_call>",
        "Both back.</think>2+3 is 5 and it is 12:00.",
    ], [("add", {"a": 2, "b": 3}), ("get_time", {})], "2+3 is 5 and it is 12:00."),
    "several arguments: a JSON-looking string stays a string": ([
        f"Keep it.</think>Saving.<tool_call>note{pair('text', '123')}{pair('tags', TAGS)}"
        f"{pair('pinned', 'true')}</tool_call>",
        "</think>Kept.",
    ], [("note", {"text": "123", "tags": ["a", "b c"], "pinned": True})], "Kept."),
    "cut by the stop token: no closing tags": ([
        f"Add.</think><tool_call>add{pair('a', '4')}<arg_key>b</arg_key><arg_value>5",
        "</think>9.",
    ], [("add", {"a": 4, "b": 5})], "9."),
    "GLM-4.5's layout from a GLM-4.7 prompt": ([
        "Add.</think>\n<tool_call>add\n<arg_key>a</arg_key>\n<arg_value>1</arg_value>\n<arg_key>b</arg_key>\n"
        "<arg_value>1</arg_value>\n</tool_call>",
        "</think>\n2.",
    ], [("add", {"a": 1, "b": 1})], "2."),
    "never closed its thinking before calling": ([
        f"I should add these <tool_call>add{pair('a', '6')}{pair('b', '7')}</tool_call>",
        "</think>13.",
    ], [("add", {"a": 6, "b": 7})], "13."),
    "a value of the wrong type, then corrected": ([
        f"</think><tool_call>add{pair('a', 'two')}{pair('b', '2')}</tool_call>",
        f"Must be a number.</think><tool_call>add{pair('a', '2')}{pair('b', '2')}</tool_call>",
        "</think>4.",
    ], [("add", {"a": 2, "b": 2})], "4."),
    "an unknown tool, then a known one": ([
        f"</think><tool_call>multiply{pair('a', '2')}</tool_call>",
        f"</think><tool_call>add{pair('a', '2')}{pair('b', '2')}</tool_call>",
        "</think>4.",
    ], [("add", {"a": 2, "b": 2})], "4."),
}


def _run(model) -> object:
    CALLS.clear()
    with Agent(model=model, tools=[add, get_time, note]) as agent:
        return agent.run("Do it.")


def _check(result, calls, answer, steps):
    assert result.status == "answered", result.error
    assert result.answer == answer and CALLS == calls
    assert len(result.steps) == steps


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("name", list(SCRIPTS))
def test_completions_backend_reads_glm47(fake_server, name, stream):
    completions, calls, answer = SCRIPTS[name]
    fake_server.script([Reply(text=text, stop="observation" if "<tool_call>" in text else "user")
                        for text in completions])
    result = _run(CompletionsModel(fake_server.url, fake_server.model, chat_format=GLM47Format(), stream=stream))
    _check(result, calls, answer, len(completions))
    prompts = [post.prompt for post in fake_server.posts]
    assert all(prompt.endswith("<|assistant|><think>") for prompt in prompts)
    # each step's prompt extends the last (the server's prefix cache holds) where the model reasoned: an
    # empty <think></think> is written back as a bare </think>, as GLM-4.7's template does
    for before, after, text in zip(prompts, prompts[1:], completions):
        assert after.startswith(before) == (not text.startswith(THINK_CLOSE)), text


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("name", list(SCRIPTS))
def test_chat_backend_reads_the_xml_a_server_left_in_content(fake_server, name, stream):
    """The server's reasoning parser split off the thinking, its tool parser missed the calls."""
    completions, calls, answer = SCRIPTS[name]
    replies = []
    for text in completions:
        reasoning, _, rest = text.rpartition(THINK_CLOSE) if THINK_CLOSE in text else ("", "", text)
        replies.append(Reply(reasoning=reasoning or None, content=rest))
    fake_server.script(replies)
    result = _run(OpenAIChatModel(fake_server.url, fake_server.model, stream=stream))
    _check(result, calls, answer, len(completions))
    # a call read here goes back to the server as JSON arguments, typed by the tool's schema
    history = fake_server.posts[1].body["messages"]
    echoed = next(message["tool_calls"][0]["function"] for message in history if message.get("tool_calls"))
    if name not in ("a value of the wrong type, then corrected", "an unknown tool, then a known one"):
        assert (echoed["name"], json.loads(echoed["arguments"])) == calls[0]


@pytest.mark.parametrize("stream", [True, False])
def test_chat_backend_without_a_reasoning_parser(fake_server, stream):
    """No parsers at all: the text arrives as GLM-4.7 wrote it after its opening <think>."""
    completions, calls, answer = SCRIPTS["two calls in one turn, one without arguments"]
    fake_server.script([Reply(content=text) for text in completions])
    result = _run(OpenAIChatModel(fake_server.url, fake_server.model, stream=stream))
    _check(result, calls, answer, 2)
    assert [step.reasoning for step in result.steps] == ["Sum, then the time.", "Both back."]


@pytest.mark.parametrize("stream", [True, False])
def test_chat_backend_with_native_calls_and_reasoning_sent_back(fake_server, stream):
    """A server running --tool-call-parser glm47 --reasoning-parser glm45: two native calls in one turn,
    one without arguments; the reasoning goes back with the history for the template to keep."""
    fake_server.script([
        Reply(reasoning="Sum, then the time.", tool_calls=[("add", {"a": 2, "b": 3}), ("get_time", "{}")]),
        Reply(reasoning="Both back.", content="5, at 12:00."),
    ])
    result = _run(OpenAIChatModel(fake_server.url, fake_server.model, stream=stream))
    _check(result, [("add", {"a": 2, "b": 3}), ("get_time", {})], "5, at 12:00.", 2)
    history = fake_server.posts[1].body["messages"]
    assistant = next(m for m in history if m["role"] == "assistant")
    assert assistant["reasoning_content"] == "Sum, then the time." and len(assistant["tool_calls"]) == 2
    assert all("reasoning_content" not in m for m in history if m["role"] != "assistant")


def test_preserved_thinking_reaches_a_chat_server_as_clear_thinking(fake_server):
    from agent.policy import load_policy

    fake_server.script([Reply(content="Hi.")])
    policy = load_policy("default").with_section("model", thinking=True, preserved_thinking=True)
    with Agent(model=OpenAIChatModel(fake_server.url, fake_server.model), tools=[], policy=policy) as agent:
        assert agent.run("hi").answer == "Hi."
    assert fake_server.posts[0].body["chat_template_kwargs"] == {"enable_thinking": True, "clear_thinking": False}
