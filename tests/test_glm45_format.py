"""The GLM-4.5+ format (issue 13, first step): XML calls and thinking, rendered and read back exactly."""

import json
from pathlib import Path

import pytest

from hypothesis import given
from hypothesis import strategies as st
from test_parser_fuzz import PARAMETERS, SETTINGS, TOOL_NAME, same, values_for

from agent import Agent, Tool
from agent.messages import Message, ToolCall, ToolSpec
from agent.models import RawPromptModel
from agent.models.base import Completion
from agent.protocol.glm45 import (GLM45, GLM47, GLM45Format, GLM47Format, decode_arguments, parse_completion,
                                  render_call, template_messages)

REASONING = st.text(st.characters(whitelist_categories=("L", "Zs", "Nd")), max_size=30).map(str.strip)


def _clean_keys(schema):
    """Keys as models write them: no blanks around (a key is read stripped)."""
    return schema["properties"] and all(key == key.strip() for key in schema["properties"])


@SETTINGS
@given(data=st.data())
def test_every_rendered_call_reads_back_exactly(data):
    tools = data.draw(st.lists(st.tuples(TOOL_NAME, PARAMETERS.filter(_clean_keys)), min_size=1, max_size=3,
                               unique_by=lambda t: t[0]))
    wanted = data.draw(st.lists(st.sampled_from(tools).flatmap(
        lambda tool: st.tuples(st.just(tool), values_for(tool[1]))), min_size=1, max_size=3))
    compact = data.draw(st.booleans())  # GLM-4.7's layout: no newlines at all
    calls = [render_call(ToolCall(id="x", name=name, arguments=args, syntax="json"), compact=compact)
             for (name, _), args in wanted]
    if not compact and data.draw(st.booleans()):  # a GLM-4.5 layout with the name run into the first <arg_key>
        calls = [call.replace("\n<arg_key>", "<arg_key>", 1) for call in calls]
    reasoning, answer = data.draw(REASONING), data.draw(REASONING)
    text = f"\n<think>{reasoning}</think>" + (f"\n{answer}" if answer else "") + "".join("\n" + c for c in calls)
    if data.draw(st.booleans()):  # cut by the stop token before the last closing tag
        text = text[: -len("</tool_call>")]
    text += data.draw(st.sampled_from(["", "<|observation|>"]))

    turn = parse_completion(text)

    assert [call.name for call in turn.tool_calls] == [name for (name, _), _ in wanted], text
    assert turn.reasoning == reasoning and turn.content == answer, text
    for call, ((_, schema), args) in zip(turn.tool_calls, wanted):
        decoded = decode_arguments(call.body, schema)
        assert same(decoded, args), (call.body, args)
        assert same(Tool.from_schema({"name": "t", "parameters": schema}, lambda a: None).validate(decoded), args)


@SETTINGS
@given(st.lists(st.one_of(st.text(max_size=15), st.sampled_from(
    ["<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", "<think>", "</think>",
     "\n", "<|observation|>"])), max_size=14))
def test_the_reader_never_raises_and_never_invents_text(pieces):
    text = "".join(pieces)
    turn = parse_completion(text)
    for call in turn.tool_calls:
        assert call.body in text and call.name in text
        decode_arguments(call.body, {"properties": {"n": {"type": "integer"}}})
    assert turn.reasoning in text


def test_glm47_shapes_and_known_malformations():
    turn = parse_completion("<think>need the time</think><tool_call>get_time</tool_call>"
                            "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>"
                            "<arg_key>days</arg_key><arg_value>3</arg_value></tool_call>")
    assert [c.name for c in turn.tool_calls] == ["get_time", "get_weather"] and turn.reasoning == "need the time"
    schema = {"properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}
    assert decode_arguments(turn.tool_calls[0].body, schema) == {}
    assert decode_arguments(turn.tool_calls[1].body, schema) == {"city": "Paris", "days": 3}
    # a string that looks like JSON stays a string; a number that is not JSON stays text for the schema check
    odd = "<tool_call>f\n<arg_key>city</arg_key>\n<arg_value>123</arg_value>\n<arg_key>days</arg_key>\n<arg_value>three"
    (call,) = parse_completion(odd).tool_calls  # no closing tags at all: cut by the token budget
    assert decode_arguments(call.body, schema) == {"city": "123", "days": "three"}
    unclosed = parse_completion("<think>still thinking <tool_call>f\n<arg_key>city</arg_key>\n<arg_value>Oslo")
    assert unclosed.reasoning == "still thinking" and unclosed.tool_calls[0].name == "f"


def test_history_renders_back_to_what_the_model_generated():
    """So a local model's KV cache covers the whole history."""
    tools = [ToolSpec(name="get_weather", description="Weather.", parameters={
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}})]
    generated = ("\n<think>Look it up.</think>\nLet me check.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n"
                 "<arg_value>北京</arg_value>\n<arg_key>days</arg_key>\n<arg_value>2</arg_value>\n</tool_call>")
    turn = GLM45.parse(generated, ["get_weather"], "observation")
    question = [Message(role="user", content="天气？")]
    history = question + [Message(role="assistant", content=turn.content, reasoning=turn.reasoning,
                                  tool_calls=turn.tool_calls)]
    prompt = GLM45.render(question, tools)
    assert GLM45.render(history, tools, add_generation_prompt=False) == prompt + generated
    assert prompt.startswith("[gMASK]<sop><|system|>\n# Tools\n") and json.dumps(
        {"type": "function", "function": tools[0].model_dump(include={"name", "description", "parameters"})},
        ensure_ascii=False) in prompt
    after = history + [Message(role="observation", content="sunny", tool_call_id="1"),
                       Message(role="user", content="thanks")]
    rendered = GLM45.render(after + [Message(role="assistant", content="ok")], tools)
    assert "<think>Look it up.</think>" not in rendered  # reasoning before the last user turn is dropped
    assert "<|observation|>\n<tool_response>\nsunny\n</tool_response><|user|>\nthanks" in rendered
    assert GLM45Format(thinking=False).render(question, tools).endswith("天气？/nothink<|assistant|>\n<think></think>")


class Replay(RawPromptModel):
    chat_format = GLM45

    def __init__(self, completions):
        self.completions, self.prompts = list(completions), []

    async def complete(self, prompt, settings, on_token=None, *, tools=None):
        self.prompts.append(prompt)
        return Completion(text=self.completions.pop(0))


def test_a_glm45_model_drives_the_loop_with_typed_arguments():
    seen = []
    book = Tool.from_schema({"name": "book", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "nights": {"type": "integer"}, "extras": {"type": "array"}}}},
        lambda args: seen.append(args) or "booked")
    model = Replay(["\n<think>Book it.</think>\n<tool_call>book\n<arg_key>city</arg_key>\n<arg_value>Oslo</arg_value>\n"
                    "<arg_key>nights</arg_key>\n<arg_value>2</arg_value>\n<arg_key>extras</arg_key>\n"
                    '<arg_value>["breakfast"]</arg_value>\n</tool_call>', "\n<think></think>\nBooked two nights."])
    result = Agent(model=model, tools=[book]).run("Book Oslo for two nights")
    assert result.answer == "Booked two nights." and seen == [{"city": "Oslo", "nights": 2, "extras": ["breakfast"]}]
    assert "<|observation|>\n<tool_response>\nbooked\n</tool_response><|assistant|>" in model.prompts[1]
    assert "<think>Book it.</think>" in model.prompts[1]  # kept: it belongs to the current user turn


def test_the_format_comes_from_the_checkpoint():
    from agent.protocol.formats import format_of_config

    assert format_of_config({"architectures": ["Glm4MoeForCausalLM"], "model_type": "glm4_moe"}) == "glm45"
    assert format_of_config({"model_type": "glm4_moe_lite"}) == "glm47"  # GLM-4.7-Flash
    assert format_of_config({"model_type": "glm4_moe"}, chat_template=TEMPLATE47) == "glm47"  # GLM-4.7: its template
    assert format_of_config({"architectures": ["GlmForCausalLM"], "model_type": "glm"}) == "glm4"  # glm-4-9b-chat-hf
    assert format_of_config({"architectures": ["Glm4ForCausalLM"], "model_type": "glm4"}) == "glm4"  # GLM-4-0414


def test_a_served_glm47_through_the_completions_backend(fake_server, tmp_path):
    from fake_glm_server import Reply
    from test_cli import MYTOOLS, agent_cli

    (tmp_path / "mytools.py").write_text(MYTOOLS)
    fake_server.script([
        Reply(text="\n<think>Add them.</think>\n<tool_call>add<arg_key>a</arg_key><arg_value>2</arg_value>"
                   "<arg_key>b</arg_key><arg_value>3</arg_value></tool_call>", stop="observation"),
        Reply(text="\n<think></think>\nIt is 5.", stop="user")])
    proc = agent_cli("run", "2+3?", "--base-url", fake_server.url, "--model", fake_server.model, "--backend",
                     "completions", "--format", "glm45", "--tools-module", "mytools.py", "--thinking", "off",
                     cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "It is 5." in proc.stdout
    first, second = (post.prompt for post in fake_server.posts)
    assert "<tools>\n" in first and first.endswith("2+3?/nothink<|assistant|>\n<think></think>")
    assert "<|observation|>\n<tool_response>\n5\n</tool_response>" in second


def test_thinking_off_reaches_a_chat_server_as_its_template_switch(fake_server):
    from test_cli import agent_cli

    fake_server.script(["\nHello."])
    proc = agent_cli("run", "hi", "--base-url", fake_server.url, "--model", fake_server.model, "--tools", "none",
                     "--thinking", "off")
    assert proc.returncode == 0, proc.stderr
    assert fake_server.posts[0].body["chat_template_kwargs"] == {"enable_thinking": False}


@pytest.mark.parametrize("flags, message", [
    (["--format", "glm5"], "--format glm5 is not a chat format"),
    (["--thinking", "maybe"], "--thinking takes on or off"),
])
def test_format_flags_that_cannot_be(fake_server, flags, message):
    from test_cli import agent_cli

    proc = agent_cli("run", "hi", "--base-url", fake_server.url, "--model", fake_server.model, "--tools", "none",
                     *flags)
    assert proc.returncode == 2 and message in proc.stderr


TEMPLATE = (Path(__file__).parent / "glm45_template.jinja").read_text(encoding="utf-8")
TEMPLATE47 = (Path(__file__).parent / "glm47_template.jinja").read_text(encoding="utf-8")
WEATHER = ToolSpec(name="get_weather", description="天气 / weather", parameters={
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                     "hourly": {"type": "boolean"}}, "required": ["city"]})


def call(name, **arguments):
    return ToolCall(id=name, name=name, arguments=arguments, syntax="json")


GLM45_CONVERSATIONS = {
    "first turn with tools": ([Message(role="user", content="北京今天天气怎么样？")], [WEATHER]),
    "no tools, a system prompt": ([Message(role="system", content="Answer briefly."),
                                   Message(role="user", content="hi")], []),
    "calls, results and an answer, then a new question": ([
        Message(role="user", content="Weather in Oslo and Rome for 2 days?"),
        Message(role="assistant", content="Checking both.", reasoning="Two cities: two calls.",
                tool_calls=[call("get_weather", city="Oslo", days=2, hourly=False), call("get_weather", city="Rome")]),
        Message(role="observation", content='{"temp": 3}'),
        Message(role="observation", content='{"temp": 18}'),
        Message(role="assistant", content="Oslo 3°C, Rome 18°C.", reasoning="Both answered."),
        Message(role="user", content="And tomorrow? 😀"),
    ], [WEATHER]),
    "reasoning of the current turn is kept": ([
        Message(role="user", content="Weather?"),
        Message(role="assistant", reasoning="  Need a city.  ", tool_calls=[call("get_weather", city="Paris")]),
        Message(role="observation", content="sunny"),
    ], [WEATHER]),
}


# (format, its template, the template's switches): GLM-4.5 and GLM-4.7, thinking on and off, GLM-4.7's
# reasoning preserved (clear_thinking false) or cleared
VARIANTS = {
    "glm45": (GLM45Format(), TEMPLATE, {}),
    "glm45 nothink": (GLM45Format(thinking=False), TEMPLATE, {"enable_thinking": False}),
    "glm47 preserved": (GLM47Format(), TEMPLATE47, {"clear_thinking": False}),
    "glm47 cleared": (GLM47Format(preserved_thinking=False), TEMPLATE47, {}),
    "glm47 nothink": (GLM47Format(thinking=False), TEMPLATE47, {"enable_thinking": False, "clear_thinking": False}),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", list(GLM45_CONVERSATIONS))
def test_rendering_equals_the_chat_template_byte_for_byte(name, variant):
    from transformers.utils.chat_template_utils import render_jinja_template

    messages, tools = GLM45_CONVERSATIONS[name]
    chat_format, template, switches = VARIANTS[variant]
    entries = [{"type": "function", "function": spec.model_dump(include={"name", "description", "parameters"})}
               for spec in tools]
    rendered, _ = render_jinja_template(conversations=[template_messages(messages)], tools=entries or None,
                                        chat_template=template, add_generation_prompt=True, **switches)
    assert chat_format.render(messages, tools) == rendered[0]
    assert chat_format.template_inputs(messages, tools)["tools"] == (entries or None)
    assert {k: v for k, v in chat_format.template_inputs(messages, tools).items()
            if k not in ("conversation", "tools")} == switches


def test_glm47_history_renders_back_to_what_it_generated_and_keeps_its_reasoning():
    """GLM-4.7's prompt opens <think>; the completion starts inside the reasoning; with preserved thinking
    the reasoning stays through later questions, so every prompt extends the last (KV reuse across turns)."""
    tools = [WEATHER]
    generated = ("Look it up.</think>Let me check.<tool_call>get_weather<arg_key>city</arg_key>"
                 "<arg_value>北京</arg_value><arg_key>days</arg_key><arg_value>2</arg_value></tool_call>")
    turn = GLM47.parse(generated, ["get_weather"], "observation")
    assert turn.reasoning == "Look it up." and turn.content == "Let me check." and turn.tool_calls[0].name == "get_weather"
    question = [Message(role="user", content="天气？")]
    history = question + [Message(role="assistant", content=turn.content, reasoning=turn.reasoning,
                                  tool_calls=turn.tool_calls)]
    prompt = GLM47.render(question, tools)
    assert prompt.endswith("天气？<|assistant|><think>")
    assert GLM47.render(history, tools, add_generation_prompt=False) == prompt + generated
    later = history + [Message(role="observation", content="sunny"), Message(role="user", content="thanks")]
    assert GLM47.render(later, tools).startswith(prompt + generated + "<|observation|><tool_response>sunny</tool_response>")
    cleared = GLM47Format(preserved_thinking=False).render(later, tools)
    assert "<|assistant|></think>Let me check." in cleared and "Look it up." not in cleared
    # never closed (cut by the budget): all of it is reasoning, up to a call
    assert GLM47.parse("still thinking", [], None).reasoning == "still thinking"
    assert GLM47Format(thinking=False).parse("Hi.", [], "user").content == "Hi."


async def test_a_tiny_glm45_checkpoint_is_read_in_its_own_format_and_reuses_its_cache(tmp_path):
    """A GLM-4.5-architecture (MoE) checkpoint: the format comes from its config, steps reuse the KV cache."""
    from tiny_glm import build_tiny_glm

    from agent.models import TransformersModel
    from agent.policy import ModelSettings

    model = TransformersModel(build_tiny_glm(tmp_path / "moe", architecture="glm4_moe"))
    assert model.chat_format.name == "glm45"
    settings = ModelSettings(max_new_tokens=8)
    messages = [Message(role="user", content="What is 2 plus 3?")]
    first = await model.generate(messages, [WEATHER], settings)
    messages += [first.as_message(), Message(role="observation", content="5"), Message(role="user", content="And?")]
    second = await model.generate(messages, [WEATHER], settings)
    assert second.usage.reused_tokens > 0 and second.usage.prefilled_tokens < second.usage.prompt_tokens


@pytest.mark.parametrize("stream", [True, False])
async def test_a_chat_server_with_glm45_parsers_gives_reasoning_and_native_calls(fake_server, stream):
    """vLLM with --tool-call-parser glm47 --reasoning-parser glm45: calls arrive as tool_calls, thinking apart."""
    from fake_glm_server import Reply

    from agent.models import OpenAIChatModel

    seen = []
    weather = Tool.from_schema({"name": "get_weather", "parameters": WEATHER.parameters},
                               lambda args: seen.append(args) or "sunny")
    fake_server.script([Reply(reasoning="Need the weather.", tool_calls=[("get_weather", {"city": "Oslo", "days": 2})]),
                        Reply(reasoning="Got it.", content="Sunny in Oslo.")])
    model = OpenAIChatModel(fake_server.url, fake_server.model, stream=stream)
    async with Agent(model=model, tools=[weather]) as agent:
        result = await agent.arun("Weather in Oslo?")
    assert result.answer == "Sunny in Oslo." and seen == [{"city": "Oslo", "days": 2}]
    assert [step.reasoning for step in result.steps] == ["Need the weather.", "Got it."]


def _with_template(directory, template):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(directory)
    return directory


def test_a_checkpoint_whose_template_disagrees_is_named_when_it_loads(tmp_path, caplog):
    from tiny_glm import build_tiny_glm

    from agent.models import TransformersModel

    same = _with_template(build_tiny_glm(tmp_path / "same", architecture="glm4_moe"), TEMPLATE)
    with caplog.at_level("WARNING", logger="agent.models.transformers"):
        TransformersModel(same).load()
    assert "render differently" not in caplog.text
    other = _with_template(build_tiny_glm(tmp_path / "other", architecture="glm4_moe"),
                           TEMPLATE.replace("# Tools", "# Tool list"))
    with caplog.at_level("WARNING", logger="agent.models.transformers"):
        TransformersModel(other).load()
    assert "render differently" in caplog.text and "where its template has ' list" in caplog.text


def test_the_official_glm4_template_agrees_with_the_glm4_format(tmp_path, caplog):
    from tiny_glm import build_tiny_glm

    from agent.models import TransformersModel

    official = Path(__file__).resolve().parents[2] / "shared" / "reference" / "glm-4-9b-chat.chat_template.jinja"
    if not official.exists():
        pytest.skip("../shared/reference is absent")
    directory = _with_template(build_tiny_glm(tmp_path / "glm4"), official.read_text(encoding="utf-8"))
    with caplog.at_level("WARNING", logger="agent.models.transformers"):
        model = TransformersModel(directory)
        model.load()
    assert model.chat_format.name == "glm4" and "render differently" not in caplog.text



def test_a_tiny_trained_glm47_runs_a_multi_step_task_locally(tmp_path):
    """A GLM-4.5-architecture (MoE) model trained on GLM-4.7 trajectories, read as GLM-4.7 from its own
    template: it reasons, calls ``add`` twice in XML, answers; each step reuses the KV cache."""
    from tiny_glm import add, trained_tiny_glm47

    from agent.models import TransformersModel

    model = TransformersModel(trained_tiny_glm47(tmp_path))
    assert model.chat_format.name == "glm47"
    with Agent(model=model, tools=[add]) as agent:
        result = agent.run("What is 2 plus 3 plus 4?")
    assert result.status == "answered" and result.answer == "The answer is 9.", result.steps
    assert [step.reasoning for step in result.steps] == ["First 2+3.", "Then 5+4.", "Got 9."]
    assert [o.content for step in result.steps for o in step.observations] == ["5", "9"]
    assert all(step.usage.reused_tokens > 0 for step in result.steps[1:])
    # the same run with its XML calls held to add's schema by the grammar
    from agent.policy import load_policy

    constrained = load_policy("default").with_section("model", constrained_calls=True)
    with Agent(model=model, tools=[add], policy=constrained) as agent:
        again = agent.run("What is 2 plus 3 plus 4?")
    assert again.answer == "The answer is 9." and [s.reasoning for s in again.steps] == [s.reasoning for s in result.steps]


def test_the_terminal_shows_glm45_turns_as_thinking_calls_and_answers():
    """Drafts as they stream and settled calls: reasoning dim, arguments as ``key: value``, code as code."""
    from rich.console import Console

    from agent.display import EventDisplay, _draft_panel
    from agent.events import ToolCallEvent

    console = Console(record=True, width=80, force_terminal=False)
    code = {"python": ("python", "code")}
    for draft in ["<think>Which tool?", "Sum it.</think>Sure.<tool_call>add<arg_key>a</arg_key><arg_value>2</arg_value>",
                  "</think><tool_call>python\n<arg_key>code</arg_key>\n<arg_value>print(1 + 1)", "</think>It is 2."]:
        console.print(_draft_panel(draft, 5, code))
    shown = console.export_text()
    assert "thinking" in shown and "Which tool?" in shown and "<think>" not in shown
    assert "─ add ─" in shown and "a: 2" in shown and "<arg_key>" not in shown
    assert "─ python ─" in shown and "print(1 + 1)" in shown and "─ Answer ─" in shown and "It is 2." in shown

    display = EventDisplay(Console(record=True, width=80, force_terminal=False), code=code)
    (call,) = parse_completion("<tool_call>python<arg_key>code</arg_key><arg_value>x = 1\nprint(x)</arg_value></tool_call>").tool_calls
    display.show(ToolCallEvent(run_id="r", step=1, call=call))
    settled = display.console.export_text()
    assert "x = 1\n" in settled.replace("│", "").replace("  ", "") and "arg_value" not in settled
