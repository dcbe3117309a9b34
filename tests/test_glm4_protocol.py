"""The GLM-4 prompt renderer against the official template, and the completion parser."""

import json
from pathlib import Path

import pytest

from agent.builtins import builtin_class
from agent.messages import Message, ToolCall, ToolSpec
from agent.protocol.glm4 import parse_completion, render_prompt, template_messages

TEMPLATE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "glm-4-9b-chat.chat_template.jinja"


def render_official(messages, tools):
    """Render the official template the way transformers renders chat templates."""
    if not TEMPLATE.exists():
        pytest.skip("../shared/reference is absent")
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(conversations=[template_messages(messages, tools)],
                                        chat_template=TEMPLATE.read_text(encoding="utf-8"),
                                        add_generation_prompt=True)
    return rendered[0]


WEATHER = ToolSpec(name="get_weather", description="查询天气 / get the weather",
                   parameters={"type": "object", "properties": {"city": {"type": "string", "description": "城市"}},
                               "required": ["city"]})
NESTED = ToolSpec(name="book", description="Book a trip.", parameters={
    "type": "object", "properties": {"trip": {"$ref": "#/$defs/Trip"}, "mode": {"enum": ["air", "rail"]}},
    "$defs": {"Trip": {"type": "object", "properties": {"to": {"type": "string"}, "days": {"type": "integer"}}}}})
BUILTINS = [ToolSpec(name=n, builtin=n, prompt=builtin_class(n).builtin_prompt) for n in ("python", "simple_browser", "cogview")]

CONVERSATIONS = {
    "first turn, all tools": ([Message(role="user", content="北京今天天气怎么样？")], BUILTINS + [WEATHER, NESTED]),
    "no tools": ([Message(role="user", content="hello")], []),
    "system prompt and tools": ([Message(role="system", content="Answer in English."),
                                 Message(role="user", content="hi")], [WEATHER]),
    "function call and observation": ([
        Message(role="user", content="Weather in Beijing?"),
        Message(role="assistant", tool_calls=[ToolCall(id="1", name="get_weather", body='{"city": "北京"}')]),
        Message(role="observation", content='{"temperature": "23°C"}', tool_call_id="1"),
        Message(role="assistant", content="It is 23°C in Beijing."),
        Message(role="user", content="And tomorrow? 😀"),
    ], [WEATHER]),
    "thought, python, browser quotes": ([
        Message(role="user", content="Compute 2**100 and look it up"),
        Message(role="assistant", content="I will compute it first.",
                tool_calls=[ToolCall(id="a", name="python", body="```python\nprint(2**100)\n```")]),
        Message(role="observation", content="1267650600228229401496703205376", tool_call_id="a"),
        Message(role="assistant", tool_calls=[ToolCall(id="b", name="simple_browser", body='mclick([0, 1])')]),
        Message(role="observation", metadata="quote_result [0†source]", content="page zero", tool_call_id="b"),
        Message(role="observation", metadata="quote_result [1†source]", content="page one", tool_call_id="b"),
        Message(role="assistant", tool_calls=[ToolCall(id="c", name="cogview", body="A red cat")]),
        Message(role="observation", metadata="cogview_result", content="![image](cat.png)", tool_call_id="c"),
        Message(role="assistant", content="Done 【0†source】."),
    ], BUILTINS),
    "chat-API call with arguments only": ([
        Message(role="user", content="x"),
        Message(role="assistant", tool_calls=[ToolCall(id="1", name="get_weather", arguments={"city": "上海"},
                                                       syntax="json")]),
        Message(role="observation", content="sunny", tool_call_id="1"),
    ], [WEATHER]),
}


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_render_matches_official_template_byte_for_byte(name):
    messages, tools = CONVERSATIONS[name]
    assert render_prompt(messages, tools) == render_official(messages, tools)


def test_first_turn_prompt_is_exactly_the_template_with_no_text_of_our_own():
    from agent import Agent
    from agent.models import ScriptedModel

    model = ScriptedModel(["\nok"])
    Agent(model=model, tools=[]).run("hello")
    assert [m.role for m in model.seen[0]] == ["user"]
    assert render_prompt(model.seen[0], []) == "[gMASK]<sop><|user|>\nhello<|assistant|>"


def test_function_schema_rendered_as_indented_json():
    prompt = render_prompt([Message(role="user", content="x")], [WEATHER])
    assert json.dumps(WEATHER.model_dump(include={"name", "description", "parameters"}), ensure_ascii=False,
                      indent=4) in prompt
    assert "在调用上述函数时，请使用 Json 格式表示调用的参数。" in prompt


NAMES = ["python", "get_weather", "simple_browser"]


@pytest.mark.parametrize("text, stop, content, calls", [
    ("\nThe answer is 5.", "eos", "The answer is 5.", []),
    ('get_weather\n{"city": "Beijing"}', "observation", "", [("get_weather", '{"city": "Beijing"}')]),
    ("python\n```python\nprint(1)\n```<|observation|>", None, "", [("python", "```python\nprint(1)\n```")]),
    ("\nLet me compute.<|assistant|>python\nprint(2)", "observation", "Let me compute.", [("python", "print(2)")]),
    ("The answer without a leading newline", "eos", "The answer without a leading newline", []),
    ("Sure\nhere is more", "eos", "Sure\nhere is more", []),
    ("search_web\n{}", "observation", "", [("search_web", "{}")]),  # unknown tool: the registry says so
    ("", "eos", "", []),
])
def test_parse_completion(text, stop, content, calls):
    turn = parse_completion(text, NAMES, stop)
    assert turn.content == content
    assert [(c.name, c.body) for c in turn.tool_calls] == calls


def test_parsed_turn_renders_back_to_what_the_model_generated():
    """History re-renders exactly, so a local model's KV cache covers it."""
    generated = "\nI'll run code.<|assistant|>python\nprint(2 ** 10)"
    turn = parse_completion(generated, NAMES, "observation")
    history = [Message(role="user", content="q"),
               Message(role="assistant", content=turn.content, tool_calls=turn.tool_calls)]
    prompt = render_prompt(history[:1], [])
    assert render_prompt(history, [], add_generation_prompt=False) == prompt + generated


def test_a_call_with_an_empty_body_stays_visible():
    history = [Message(role="user", content="go"),
               Message(role="assistant", tool_calls=[ToolCall(id="1", name="ping", body="")]),
               Message(role="observation", content="Done (no output).", tool_call_id="1")]
    assert render_prompt(history, []).endswith("<|assistant|>ping\n{}<|observation|>\nDone (no output).<|assistant|>")
