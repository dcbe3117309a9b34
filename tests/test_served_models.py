"""The served backends (`OpenAIChatModel`, `CompletionsModel`) against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import email.utils
import gc
import json
import socket
import time

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent import Agent, Policy
from agent.errors import ModelAuthError, ModelConnectionError, ModelError, ModelNotFoundError
from agent.messages import Message, ToolCall, ToolSpec
from agent.models._http import Serialized, encode_json, iter_sse, json_text, normalize_base_url
from agent.models.completions import CompletionsModel, stop_reason
from agent.models.openai import OpenAIChatModel, chat_messages, chat_tool
from agent.policy import ModelSettings
from agent.protocol import glm4
from agent.registry import ToolRegistry
from agent.retrying import retry_after_seconds
from agent.tool import ToolContext, tool
from fake_glm_server import Drop, Fail, FakeGLMServer, Reply  # the `fake_server` fixture comes from conftest

BACKENDS = [CompletionsModel, OpenAIChatModel]
SETTINGS = ModelSettings(temperature=0.3, top_p=0.9, max_new_tokens=256)


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: first addend
        b: second addend
    """
    return a + b


ADD = ToolSpec(name="add", description="Add two integers.", parameters={
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]})
PYTHON = ToolSpec(name="python", description="Run Python code.", builtin="python", parameters={
    "type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]})


def make(cls, server: FakeGLMServer, **options):
    """A backend on the fake server that records its retry waits instead of sleeping them."""
    model = cls(server.url, server.model, **{"backoff": 0.01, **options})
    model.waits = []

    async def record(seconds: float) -> None:
        model.waits.append(seconds)

    model._http._sleep = record
    return model


async def generate(model, messages=None, tools=(ADD,), tokens=None):
    messages = messages or [Message(role="user", content="What is 2+3?")]
    try:
        return await model.generate(messages, list(tools), SETTINGS, tokens.append if tokens is not None else None)
    finally:
        await model.aclose()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------------------
# CompletionsModel: GLM-4 prompt in, completion out


@pytest.mark.parametrize("stream", [True, False])
async def test_completions_sends_the_glm4_prompt_and_reads_a_call(fake_server, stream):
    fake_server.script(['add\n{"a": 2, "b": 3}'])
    tokens: list[str] = []
    messages = [Message(role="user", content="2+3 等于几？")]
    turn = await generate(make(CompletionsModel, fake_server, stream=stream), messages, tokens=tokens)

    assert [(c.name, c.body, c.syntax) for c in turn.tool_calls] == [("add", '{"a": 2, "b": 3}', "glm4")]
    assert turn.stop_reason == "observation" and turn.raw == 'add\n{"a": 2, "b": 3}'
    assert turn.usage.completion_tokens > 0 and turn.usage.prompt_tokens > 0
    assert ("".join(tokens) == turn.raw) if stream else tokens == []
    (request,) = fake_server.posts
    assert request.path == "/v1/completions"
    body = request.body
    assert body["prompt"] == glm4.render_prompt(messages, [ADD])
    assert body["prompt"].count("[gMASK]<sop>") == 1 and body["prompt"].endswith("<|assistant|>")
    assert "2+3 等于几？" in body["prompt"]
    assert body["model"] == "glm-4-9b-chat"
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (256, 0.3, 0.9)
    assert body["stop_token_ids"] == [151329, 151336, 151338]
    assert body["stop"] == ["<|endoftext|>", "<|user|>", "<|observation|>"]
    assert body["skip_special_tokens"] is False and body["add_special_tokens"] is False
    assert body["stream"] is stream
    assert ("stream_options" in body) is stream


@pytest.mark.parametrize("stream", [True, False])
async def test_completions_reads_an_answer_after_an_observation(fake_server, stream):
    fake_server.script(["\n2 + 3 = **5**。"])
    history = [Message(role="user", content="What is 2+3?"),
               Message(role="assistant", tool_calls=[ToolCall(id="c1", name="add", body='{"a": 2, "b": 3}')]),
               Message(role="observation", content="5", tool_call_id="c1", name="add")]
    tokens: list[str] = []
    turn = await generate(make(CompletionsModel, fake_server, stream=stream), history, tokens=tokens)

    assert turn.answer == "2 + 3 = **5**。" and turn.stop_reason == "user"
    prompt = fake_server.posts[0].body["prompt"]
    assert prompt.endswith('<|assistant|>add\n{"a": 2, "b": 3}<|observation|>\n5<|assistant|>')


@pytest.mark.parametrize(("choice", "expected"), [
    ({"finish_reason": "stop", "stop_reason": 151338}, "observation"),
    ({"finish_reason": "stop", "stop_reason": "<|observation|>"}, "observation"),
    ({"finish_reason": "stop", "matched_stop": 151338}, "observation"),  # SGLang's field
    ({"finish_reason": "stop", "stop_reason": 151336}, "user"),
    ({"finish_reason": "stop", "stop_reason": "<|user|>"}, "user"),
    ({"finish_reason": "stop", "stop_reason": 151329}, "eos"),
    ({"finish_reason": "stop", "stop_reason": None}, "eos"),
    ({"finish_reason": "length", "stop_reason": None}, "length"),
    ({"finish_reason": "stop", "text": "python\nprint(1)<|observation|>"}, "observation"),
    ({"finish_reason": None}, None),
])
def test_stop_reason_reads_vllm_and_sglang(choice, expected):
    assert stop_reason(choice) == expected


@pytest.mark.parametrize("stream", [True, False])
async def test_completions_stop_reported_as_a_string_or_not_at_all(fake_server, stream):
    fake_server.script([
        Reply(text="get_weather\n{\"city\": \"北京\"}", stop_reason="<|observation|>"),  # stop-string servers
        Reply(text="\nIt is sunny.", stop_reason=None),                                 # EOS, nothing matched
        Reply(text="\nA long answer that", stop="length"),
    ])
    model = make(CompletionsModel, fake_server, stream=stream)
    call = await model.generate([Message(role="user", content="Weather?")], [ADD], SETTINGS)
    answer = await model.generate([Message(role="user", content="Weather?")], [ADD], SETTINGS)
    cut = await generate(model)

    # An unknown tool is still a call when the model stopped for an observation; the registry says so.
    assert [c.name for c in call.tool_calls] == ["get_weather"] and call.stop_reason == "observation"
    assert answer.answer == "It is sunny." and answer.stop_reason == "eos"
    assert cut.answer == "A long answer that" and cut.stop_reason == "length"


async def test_completions_with_a_server_that_ignores_stops_still_sees_the_call(fake_server):
    # With no stop ids or strings the server runs through <|observation|>; the text still says it.
    fake_server.script(["python\nprint(6 * 7)"])
    model = make(CompletionsModel, fake_server, stream=False, extra_body={"stop_token_ids": [], "stop": []})
    turn = await generate(model, tools=[PYTHON])

    assert fake_server.posts[0].body["stop_token_ids"] == []
    assert turn.stop_reason == "observation"
    assert [(c.name, c.body) for c in turn.tool_calls] == [("python", "print(6 * 7)")]


async def test_unknown_tool_from_glm4_becomes_an_error_observation(fake_server, tmp_path):
    fake_server.script(['multiply\n{"a": 2, "b": 3}'])
    turn = await generate(make(CompletionsModel, fake_server))
    registry = ToolRegistry([add])
    observation = await registry.call(turn.tool_calls[0], ToolContext(run_id="t", artifacts_dir=tmp_path))

    assert observation.is_error
    assert "no tool named 'multiply'" in observation.content and "add" in observation.content


# ---------------------------------------------------------------------------------------------------
# OpenAIChatModel: native tool calls


@pytest.mark.parametrize("stream", [True, False])
async def test_chat_reads_native_tool_calls(fake_server, stream):
    fake_server.script([Reply(content="Let me add them.",
                              tool_calls=[("add", {"a": 2, "b": 3}), ("python", json.dumps({"code": "print('好')"}))])])
    tokens: list[str] = []
    turn = await generate(make(OpenAIChatModel, fake_server, stream=stream), tools=[ADD, PYTHON], tokens=tokens)

    assert turn.content == "Let me add them." and turn.stop_reason == "tool_calls"
    assert [(c.name, c.arguments, c.syntax) for c in turn.tool_calls] == [
        ("add", {"a": 2, "b": 3}, "json"), ("python", {"code": "print('好')"}, "json")]
    assert [c.id for c in turn.tool_calls] == ["chatcmpl-tool-0", "chatcmpl-tool-1"]
    assert json.loads(turn.tool_calls[1].body) == {"code": "print('好')"}
    assert ("".join(tokens) == "Let me add them.") if stream else tokens == []
    assert turn.usage.prompt_tokens > 0 and turn.usage.completion_tokens > 0
    (request,) = fake_server.posts
    assert request.path == "/v1/chat/completions"
    body = request.body
    assert body["messages"] == [{"role": "user", "content": "What is 2+3?"}]
    assert body["tools"] == [
        {"type": "function", "function": {"name": "add", "description": "Add two integers.", "parameters": ADD.parameters}},
        {"type": "function", "function": {"name": "python", "description": "Run Python code.",
                                          "parameters": PYTHON.parameters}}]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stream"]) == (256, 0.3, 0.9, stream)


@pytest.mark.parametrize("stream", [True, False])
async def test_chat_reads_an_answer_and_echoes_the_history(fake_server, stream):
    fake_server.script(["\nThe answer is 5."])  # GLM-4 text: the server's tool parser finds no call
    history = [
        Message(role="system", content=""),  # GLM-4's tools carrier: not sent to chat APIs
        Message(role="user", content="What is 2+3? Then print it."),
        Message(role="assistant", content="Adding.", tool_calls=[
            ToolCall(id="call_a", name="add", body='{"a": 2, "b": 3}', arguments={"a": 2, "b": 3}, syntax="json"),
            ToolCall(id="call_p", name="python", body="print(5)")]),  # a GLM-4 body: sent as written
        Message(role="observation", content="5", tool_call_id="call_a", name="add"),
        Message(role="observation", content="5\n", tool_call_id="call_p", name="python"),
    ]
    tokens: list[str] = []
    turn = await generate(make(OpenAIChatModel, fake_server, stream=stream), history, tools=[], tokens=tokens)

    assert turn.answer == "The answer is 5." and turn.stop_reason == "eos" and not turn.tool_calls
    assert ("".join(tokens) == "The answer is 5.") if stream else tokens == []
    body = fake_server.posts[0].body
    assert "tools" not in body  # an empty list is refused by some servers
    assert body["messages"] == [
        {"role": "user", "content": "What is 2+3? Then print it."},
        {"role": "assistant", "content": "Adding.", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}},
            {"id": "call_p", "type": "function", "function": {"name": "python", "arguments": "print(5)"}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "5"},
        {"role": "tool", "tool_call_id": "call_p", "content": "5\n"},
    ]


def test_chat_messages_join_observation_parts_and_fill_missing_ids():
    messages = [
        Message(role="system", content="Be brief."),
        Message(role="user", content="Read pages 0 and 1."),
        Message(role="assistant", tool_calls=[ToolCall(id="b1", name="simple_browser", body="mclick([0, 1])")]),
        Message(role="observation", content="page zero", metadata="quote_result [0†a]", tool_call_id="b1"),
        Message(role="observation", content="page one", metadata="quote_result [1†b]", tool_call_id="b1"),
        Message(role="assistant", tool_calls=[ToolCall(id="p1", name="python", body="")]),
        Message(role="observation", content="ok"),  # no id: answers the pending call
    ]
    assert chat_messages(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Read pages 0 and 1."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "b1", "type": "function", "function": {"name": "simple_browser", "arguments": "mclick([0, 1])"}}]},
        {"role": "tool", "tool_call_id": "b1",
         "content": "quote_result [0†a]\npage zero\n\nquote_result [1†b]\npage one"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "p1", "type": "function", "function": {"name": "python", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "p1", "content": "ok"},
    ]


def whole_request(model: OpenAIChatModel, messages: list[Message], tools: list[ToolSpec],
                  settings: ModelSettings = SETTINGS) -> bytes:
    """The request body converted and serialized whole, as it was before requests grew step by step."""
    fields: dict = {"messages": chat_messages(messages, tools)}
    if tools:
        fields["tools"] = [chat_tool(spec) for spec in tools]
    body = model.request_body(settings, **fields)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def call_turn(step: int, *names: str) -> Message:
    calls = [ToolCall(id=f"c{step}{name}", name=name, body=json.dumps({"a": step, "b": "é"}),
                      arguments={"a": step, "b": "é"}, syntax="json") for name in names]
    return Message(role="assistant", content=f"step {step}" if step % 2 else "", reasoning="why" if step == 2 else "",
                   tool_calls=calls)


async def test_chat_request_over_a_run_is_the_whole_rebuild_byte_for_byte(fake_server):
    def reply(request):
        turns = sum(m["role"] == "assistant" for m in request.body["messages"])
        if turns == 2:  # two calls in one turn: two tool messages
            return Reply(content="Both.", tool_calls=[("add", {"a": 1, "b": 2}), ("add", {"a": 3, "b": 4})])
        return Reply(tool_calls=[("add", {"a": turns, "b": 1})]) if turns < 5 else Reply(content="Done.")

    fake_server.script(reply)
    model = OpenAIChatModel(fake_server.url, fake_server.model, stream=False)
    agent = Agent(model=model, tools=[add], policy=Policy(tools={"enabled": []}))
    async with agent.chat() as session:
        result = await session.arun("Add things.")
    await agent.aclose()

    assert result.status == "answered" and result.answer == "Done." and len(result.steps) == 6
    turns = [i for i, m in enumerate(session.messages) if m.role == "assistant"]
    specs = agent.tools.specs()
    fresh = OpenAIChatModel(fake_server.url, fake_server.model, stream=False)
    for request, end in zip(fake_server.posts, turns, strict=True):
        assert request.raw == whole_request(fresh, session.messages[:end], specs, agent.policy.model)


def test_chat_request_after_an_edited_history_is_the_whole_rebuild():
    model = OpenAIChatModel("http://127.0.0.1:9/v1", "m", stream=False)
    tools = [ADD, PYTHON]

    def same(messages: list[Message], tools: list[ToolSpec] = tools) -> None:
        assert model.request_json(messages, tools, SETTINGS) == whole_request(model, messages, tools)

    messages = [Message(role="system", content="Be brief."), Message(role="user", content="Go.")]
    for step in range(1, 5):  # grows: calls, reasoning, an observation whose parts arrive a request apart
        same(messages)
        messages.append(call_turn(step, "add", "python"))
        messages.append(Message(role="observation", content=f"{step}", metadata="quote_result [0†a]",
                                tool_call_id=f"c{step}add"))
        same(messages)
        messages.append(Message(role="observation", content="more", metadata="quote_result [1†b]",
                                tool_call_id=f"c{step}add"))
        messages.append(Message(role="observation", content="ok"))  # no id: answers the pending python call
    same(messages)
    messages[3] = messages[3].model_copy(update={"content": "edited"})  # an earlier message replaced
    same(messages)
    del messages[-3:]  # the last turn taken back, another in its place
    messages.append(Message(role="assistant", content="Answer."))
    same(messages)
    same(messages, [ADD])  # other tools
    other = [Message(role="user", content="Another conversation.")]
    same(other)
    same(messages[:2] + other)  # a conversation that shares its start with a longer one
    same(messages)


@pytest.mark.parametrize("stream", [True, False])
async def test_chat_bad_json_arguments_become_an_error_observation(fake_server, tmp_path, stream):
    fake_server.script([Reply(tool_calls=[("add", '{"a": 2, "b": '), ("add", "{'a': 2, 'b': 3,}")])])
    turn = await generate(make(OpenAIChatModel, fake_server, stream=stream))
    broken, loose = turn.tool_calls

    assert broken.arguments is None and broken.body == '{"a": 2, "b": '
    assert loose.arguments is None  # not JSON; the registry reads it tolerantly
    context = ToolContext(run_id="t", artifacts_dir=tmp_path)
    registry = ToolRegistry([add])
    bad = await registry.call(broken, context)
    good = await registry.call(loose, context)
    assert bad.is_error and "Could not read the call to 'add'" in bad.content and '"a"' in bad.content
    assert not good.is_error and good.content == "5"


def test_streamed_call_fragments_with_or_without_index():
    from agent.models.openai import _fragment_index, _merge_fragment

    fragments = [  # indexed, the name whole once, arguments in pieces (OpenAI, vLLM)
        {"index": 0, "id": "a", "function": {"name": "add", "arguments": ""}},
        {"index": 1, "id": "b", "function": {"name": "add", "arguments": '{"a": 1'}},
        {"index": 0, "function": {"arguments": '{"a": 2, '}},
        {"index": 0, "function": {"arguments": '"b": 3}'}},
        {"index": 1, "function": {"arguments": ', "b": 1}'}},
        # no index, the name repeated in each piece: a new id starts a new call
        {"id": "c", "function": {"name": "py", "arguments": "{"}},
        {"function": {"name": "py", "arguments": "}"}},
        {"id": "c", "function": {"name": "thon"}},
    ]
    calls: dict = {}
    for fragment in fragments:
        _merge_fragment(calls.setdefault(_fragment_index(calls, fragment), {}), fragment)
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls.values()] == [
        ("a", "add", '{"a": 2, "b": 3}'), ("b", "add", '{"a": 1, "b": 1}'), ("c", "python", "{}")]


async def test_chat_glm4_call_written_as_text_is_read(fake_server):
    # A server started without a tool-call parser returns GLM-4's call as plain content.
    fake_server.script([Reply(content='add\n{"a": 2, "b": 3}')])
    turn = await generate(make(OpenAIChatModel, fake_server, stream=False))
    assert [(c.name, c.body) for c in turn.tool_calls] == [("add", '{"a": 2, "b": 3}')]
    assert turn.stop_reason == "tool_calls" and turn.content == ""


async def test_chat_usage_counts_cached_prompt_tokens_as_reused(fake_server):
    usage = {"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 64}}
    fake_server.script([Reply(content="Hi.", usage=usage)])
    turn = await generate(make(OpenAIChatModel, fake_server))
    assert (turn.usage.prompt_tokens, turn.usage.completion_tokens) == (100, 7)
    assert (turn.usage.prefilled_tokens, turn.usage.reused_tokens) == (36, 64)


# ---------------------------------------------------------------------------------------------------
# Retries and errors, for both backends


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("cls", BACKENDS)
async def test_retries_503_twice_then_answers(fake_server, cls, stream):
    fake_server.script([Fail(503), Fail(503), "\nFive."])
    model = make(cls, fake_server, stream=stream, backoff=0.25)
    turn = await generate(model)
    assert turn.answer == "Five."
    assert len(fake_server.posts) == 3
    assert model.waits == [0.25, 0.5]  # exponential backoff


@pytest.mark.parametrize("cls", BACKENDS)
async def test_429_retry_after_is_honoured(fake_server, cls):
    fake_server.script([Fail(429, retry_after=0), Fail(429, retry_after=1.5), "\nFive."])
    model = make(cls, fake_server, backoff=30.0)
    turn = await generate(model)
    assert turn.answer == "Five."
    assert model.waits == [0.0, 1.5]


async def test_dropped_connection_is_retried(fake_server):
    fake_server.script([Drop(), "\nFive."])
    model = make(CompletionsModel, fake_server)
    assert (await generate(model)).answer == "Five."
    assert len(fake_server.posts) == 2 and len(model.waits) == 1


@pytest.mark.parametrize("cls", BACKENDS)
async def test_503_until_retries_run_out(fake_server, cls):
    fake_server.script([Fail(503, message="engine overloaded")] * 3)
    model = make(cls, fake_server, max_retries=2)
    with pytest.raises(ModelConnectionError, match=r"kept answering 503 \(engine overloaded\) after 3 attempts"):
        await generate(model)
    assert len(fake_server.posts) == 3


@pytest.mark.parametrize("cls", BACKENDS)
async def test_wrong_api_key_is_a_clear_auth_error(cls):
    with FakeGLMServer(api_key="sk-right") as server:
        server.script(["\nFive."])
        with pytest.raises(ModelAuthError) as info:
            await generate(make(cls, server, api_key="sk-wrong"))
        assert len(server.posts) == 1  # not retried
        assert "refused the API key (401" in str(info.value) and "--api-key" in str(info.value)
        assert server.posts[0].headers["authorization"] == "Bearer sk-wrong"

        assert (await generate(make(cls, server, api_key="sk-right"))).answer == "Five."


async def test_api_key_defaults_to_openai_api_key(fake_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    fake_server.script(["\nFive."])
    await generate(make(OpenAIChatModel, fake_server))
    assert fake_server.posts[0].headers["authorization"] == "Bearer sk-env"


@pytest.mark.parametrize("cls", BACKENDS)
async def test_unknown_model_is_a_clear_not_found_error(fake_server, cls):
    model = cls(fake_server.url, "glm-5-huge")
    with pytest.raises(ModelNotFoundError) as info:
        await generate(model)
    message = str(info.value)
    assert "no model named 'glm-5-huge'" in message and "it serves glm-4-9b-chat" in message
    assert "--model" in message
    assert len(fake_server.posts) == 1


async def test_wrong_base_path_is_a_clear_not_found_error(fake_server):
    model = CompletionsModel(fake_server.url.replace("/v1", "/api/v2"), fake_server.model)
    with pytest.raises(ModelNotFoundError, match=r"no endpoint /api/v2/completions .*check --base-url"):
        await generate(model)


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("cls", BACKENDS)
async def test_connection_refused_after_retries(cls, stream):
    model = cls(f"http://127.0.0.1:{closed_port()}/v1", "glm-4-9b-chat", stream=stream, max_retries=2, backoff=0.001)
    with pytest.raises(ModelConnectionError, match=r"Could not reach the model server at .* after 3 attempts .*"
                                                   r"check that it is running"):
        await generate(model)


async def test_other_client_errors_are_not_retried(fake_server):
    fake_server.script([])  # the fake answers 400 when its script is empty
    model = make(OpenAIChatModel, fake_server)
    with pytest.raises(ModelError, match=r"rejected the request \(400: fake GLM-4 server: no scripted reply"):
        await generate(model)
    assert len(fake_server.posts) == 1 and model.waits == []


# ---------------------------------------------------------------------------------------------------
# Plumbing


@pytest.mark.parametrize(("given", "root"), [
    ("http://localhost:8000", "http://localhost:8000/v1"),
    ("http://localhost:8000/", "http://localhost:8000/v1"),
    ("http://localhost:8000/v1/", "http://localhost:8000/v1"),
    ("http://localhost:8000/v1/chat/completions", "http://localhost:8000/v1"),
    ("https://open.bigmodel.cn/api/paas/v4", "https://open.bigmodel.cn/api/paas/v4"),
])
def test_base_url_with_or_without_v1(given, root):
    assert normalize_base_url(given) == root


def test_base_url_must_be_a_url():
    with pytest.raises(ValueError, match="is not a URL"):
        CompletionsModel("localhost:8000", "glm-4")


def test_retry_after_as_seconds_or_http_date():
    def response(value):
        return httpx.Response(429, headers={"Retry-After": value})

    assert retry_after_seconds(response("2")) == 2.0
    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    assert 100 < retry_after_seconds(response(later)) <= 120
    assert retry_after_seconds(response("soon")) is None
    assert retry_after_seconds(httpx.Response(503)) is None


def event_stream(*lines: str) -> httpx.Response:
    body = "".join(line + "\n" for line in lines)
    return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=body.encode())


async def test_sse_reader_follows_the_event_stream_rules():
    response = event_stream(": keep-alive", "", "data: {\"a\": 1}", "", "event: message", "data: {\"b\":",
                            "data:  2}", "", "id: 7", "", "data: [DONE]", "", "data: {\"after\": true}", "")
    assert [event async for event in iter_sse(response)] == [{"a": 1}, {"b": 2}]


async def test_sse_error_event_is_a_model_error():
    response = event_stream("data: {\"error\": {\"message\": \"CUDA out of memory\"}}", "")

    async def read():
        from agent.models._http import _raise_for_inline_error
        async for event in iter_sse(response):
            _raise_for_inline_error(event, "http://x/v1")

    with pytest.raises(ModelError, match="CUDA out of memory"):
        await read()



async def test_timeout_is_the_longest_silence_between_streamed_chunks(fake_server):
    fake_server.script(["\nFive, said slowly."])
    fake_server.chunk_delay = 0.25
    turn = await generate(make(OpenAIChatModel, fake_server, timeout=0.8))
    assert turn.answer == "Five, said slowly."  # over 0.8 s in all, but never silent for 0.8 s
    fake_server.script(["\nFive."])
    fake_server.chunk_delay = 1.0  # the headers come at once, then silence
    with pytest.raises(ModelConnectionError, match=r"sent nothing for 0.4 s"):
        await generate(make(OpenAIChatModel, fake_server, timeout=0.4))

@pytest.mark.parametrize("cls", BACKENDS)
async def test_a_stream_in_another_content_type_is_a_clear_error(fake_server, monkeypatch, cls):
    import fake_glm_server

    def plain_text(handler, events):
        data = "".join(f"data: {json.dumps(event)}\n\n" for event in events).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    monkeypatch.setattr(fake_glm_server._Handler, "_sse", plain_text)
    fake_server.script(["\nFive."])
    with pytest.raises(ModelError, match="answered a streamed request with text/plain, neither an event stream"):
        await generate(make(cls, fake_server))


# The first loop's connection is dropped, not closed (it cannot be from another loop): Python warns at GC.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_one_model_serves_several_event_loops(fake_server):
    # Each asyncio.run is a new loop; pooled connections belong to the loop that opened them.
    fake_server.script(["\nOne.", "\nTwo."])
    model = OpenAIChatModel(fake_server.url, fake_server.model)
    settings = ModelSettings()
    first = asyncio.run(model.generate([Message(role="user", content="1")], [], settings))

    async def second_loop():
        try:
            return await model.generate([Message(role="user", content="2")], [], settings)
        finally:
            await model.aclose()

    second = asyncio.run(second_loop())
    assert (first.answer, second.answer) == ("One.", "Two.")
    gc.collect()  # let the dropped connection's warning land in this test


# ---------------------------------------------------------------------------------------------------
# The whole agent against the served model


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("cls", BACKENDS)
def test_agent_answers_through_a_served_glm4(fake_server, cls, stream):
    from agent import Agent

    fake_server.script([Fail(503), "Let me add.<|assistant|>add\n{\"a\": 2, \"b\": 3}", "\n2 + 3 = 5."])
    with Agent(model=cls(fake_server.url, fake_server.model, stream=stream, backoff=0.001), tools=[add]) as agent:
        result = agent.run("What is 2+3?")

    assert result.status == "answered" and result.answer == "2 + 3 = 5."
    assert [c.name for c in result.steps[0].tool_calls] == ["add"]
    assert result.steps[0].observations[0].content == "5"
    assert result.usage.completion_tokens > 0
    last = fake_server.posts[-1].body
    if cls is CompletionsModel:
        assert last["prompt"].endswith('<|assistant|>add\n{"a": 2, "b": 3}<|observation|>\n5<|assistant|>')
    else:
        call_id = result.steps[0].tool_calls[0].id
        assert last["messages"][-1] == {"role": "tool", "tool_call_id": call_id, "content": "5"}
        assert last["messages"][-2]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}


def test_agent_reports_a_served_auth_error_in_one_line():
    from agent import Agent

    with FakeGLMServer(api_key="sk-right") as server:
        with Agent(model=OpenAIChatModel(server.url, server.model, api_key="sk-wrong"), tools=[add]) as agent:
            result = agent.run("What is 2+3?")
    assert result.status == "error" and "--api-key" in result.error and "\n" not in result.error


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                           | st.text(), lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(body=st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=6), data=st.data())
@example(body={"x": {"m": "\x00m\x00"}, "m": [1, 2]}, data=None)  # an earlier marker-spliced version was fooled
def test_encode_json_splices_serialized_values_as_if_encoded_whole(body, data):
    """Any keys and values (quotes, NULs, the splice's own marks in text): the bytes are json.dumps' compact
    UTF-8 of the plain body, whichever values went in already serialized."""
    serialized = data.draw(st.sets(st.sampled_from(sorted(body)) if body else st.nothing())) if data else {"m"}
    spliced = {key: Serialized(json_text(value)) if key in serialized else value for key, value in body.items()}
    assert encode_json(spliced) == json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
