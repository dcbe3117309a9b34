"""Constrained GLM-4.5+ (XML) tool calls: what the LogitsProcessor lets a model write between
``<tool_call>name`` and ``</tool_call>``, with the tags as single tokens (GLM-4.5's tokenizer) and as
text (a tokenizer without them), and the processor on tiny random GLM-4.5 models.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any, Literal

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field
from tiny_glm import build_tiny_glm, build_tokenizer
from transformers import LogitsProcessor

from agent.messages import Message, ToolCall, ToolSpec
from agent.models.constrained import ToolCallConstraint
from agent.models.transformers import TransformersModel
from agent.policy import ModelSettings
from agent.protocol.glm45 import GLM45, decode_arguments, render_call
from agent.tool import tool

SETTINGS = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 60)), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
TOKENIZERS = {"tags as tokens": build_tokenizer(glm45=True), "tags as text": build_tokenizer()}
both_tokenizers = pytest.mark.parametrize("tokenizer", list(TOKENIZERS.values()), ids=list(TOKENIZERS))


class Place(BaseModel):
    city: str
    country: str = "CN"


@tool
def plan(city: Annotated[str, Field(max_length=20)], days: Annotated[int, Field(ge=1, le=30)],
         unit: Literal["celsius", "fahrenheit"] = "celsius", budget: float | None = None,
         tags: list[str] | None = None, place: Place | None = None, note: str | None = None,
         strict: bool = False) -> str:
    """Plan a trip.

    Args:
        city: where to
        days: how long
        unit: temperature unit
        budget: in US dollars
        tags: labels
        place: a place ($ref to a nested model)
        note: free text
        strict: whether to be strict
    """
    return "ok"


@tool
def forecast(city: Annotated[str, Field(max_length=12)], days: Annotated[int, Field(ge=1, le=14)] = 1,
             unit: Literal["celsius", "fahrenheit"] = "celsius") -> str:
    """Forecast for a city.

    Args:
        city: the city's name
        days: how many days
        unit: the temperature unit
    """
    return "sunny"


PYTHON = ToolSpec(name="python", builtin="python", parameters={
    "type": "object", "additionalProperties": False, "required": ["code"],
    "properties": {"code": {"type": "string", "description": "Python source to run"}}})
OPEN = {"type": "object", "properties": {"n": {"type": "integer"}}}  # undeclared keys allowed (JSON Schema's default)


def read(tokenizer, tools: list[ToolSpec], completion: str, prompt: str = "<|user|>\nhi<|assistant|>"):
    """Feed ``completion`` to a fresh constraint token by token, as generation would: the text up to the
    first token it refuses (``None``: none), and how many of its tokens it constrained."""
    constraint = ToolCallConstraint(tokenizer, tools, GLM45)
    start = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    ids = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
    for end in range(start, len(ids)):
        scores = constraint(torch.tensor([ids[:end]]), torch.zeros(1, len(tokenizer)))
        if scores[0, ids[end]] == float("-inf"):
            return tokenizer.decode(ids[start:end + 1]), constraint.constrained_tokens
    return None, constraint.constrained_tokens


def writable(tokenizer, schema: dict, body: str) -> str:
    """What the constraint makes of ``body`` after ``<tool_call>probe``: ``"invalid"`` (a token is refused),
    ``"complete"`` (the call is closed and the constraint has let go) or ``"partial"``."""
    probe = [ToolSpec(name="probe", parameters=schema)]
    refused, before = read(tokenizer, probe, "<tool_call>probe" + body)
    if refused is not None:
        return "invalid"
    _, after = read(tokenizer, probe, "<tool_call>probe" + body + "<|user|>")  # a token of its own
    return "complete" if after == before else "partial"


def pairs(arguments: dict[str, Any], newlines: bool) -> str:
    gap = "\n" if newlines else ""
    return "".join(f"<arg_key>{key}</arg_key>{gap}<arg_value>"
                   f"{value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}</arg_value>{gap}"
                   for key, value in arguments.items())


# --- the grammar, through the processor ------------------------------------------------------------

FORECAST = forecast.spec.parameters


@both_tokenizers
@pytest.mark.parametrize("body, status", [
    ("\n", "partial"),
    ("\n<arg_key>city</arg_key>\n<arg_value>Bei", "partial"),
    ("\n<arg_key>city</arg_key>\n<arg_value>Beijing</arg_value>\n</tool_call>", "complete"),           # 4.5
    ("<arg_key>city</arg_key><arg_value>Beijing</arg_value></tool_call>", "complete"),                  # 4.7
    ("<arg_key>unit</arg_key><arg_value>fahrenheit</arg_value><arg_key>days</arg_key><arg_value>14</arg_value>"
     "<arg_key>city</arg_key><arg_value> a <b> \n</arg_value></tool_call>", "complete"),                 # any order
    ("<arg_key>city</arg_key><arg_value></arg_value></tool_call>", "complete"),                         # empty text
    ("<arg_key>days</arg_key><arg_value>3</arg_value></tool_call>", "invalid"),              # required city missing
    ("<arg_key>city</arg_key><arg_value>A</arg_value><arg_key>city</arg_key>", "invalid"),               # twice
    ("<arg_key>city</arg_key><arg_value>A</arg_value><arg_key>town</arg_key>", "invalid"),               # unknown
    ("<arg_key>days</arg_key><arg_value>three</arg_value>", "invalid"),                                  # integer
    ("<arg_key>days</arg_key><arg_value>1.5</arg_value>", "invalid"),
    ("<arg_key>days</arg_key><arg_value>15</arg_value>", "invalid"),                                     # le=14
    ("<arg_key>days</arg_key><arg_value>\"3\"</arg_value>", "invalid"),
    ("<arg_key>unit</arg_key><arg_value>kelvin</arg_value>", "invalid"),                                 # enum
    ("<arg_key>unit</arg_key><arg_value>\"celsius\"</arg_value>", "invalid"),                 # text, not JSON
    ("<arg_key>city</arg_key><arg_value>Beijing-is-long</arg_value>", "invalid"),                  # max_length=12
    ("<arg_key>city</arg_key><arg_value>A</tool_call>", "invalid"),     # the parser would end the call there
    ("<arg_key>city</arg_key><arg_value>A<tool_call>", "invalid"),
    ("\n\n\n\n\n<arg_key>", "invalid"),                                                           # gaps: 4 at most
    ("<arg_key> city</arg_key>", "invalid"),
])
def test_xml_body_prefix(tokenizer, body, status):
    assert writable(tokenizer, FORECAST, body) == status


@both_tokenizers
def test_undeclared_keys_follow_json_schemas_default(tokenizer):
    assert writable(tokenizer, OPEN, "<arg_key>note</arg_key><arg_value>any text</arg_value></tool_call>") == "complete"
    assert writable(tokenizer, OPEN, "<arg_key>n</arg_key><arg_value>2</arg_value><arg_key>a b</arg_key>"
                                     "<arg_value>[x</arg_value></tool_call>") == "complete"
    assert writable(tokenizer, OPEN, "<arg_key>n</arg_key><arg_value>x</arg_value>") == "invalid"  # declared: typed
    typed = {**OPEN, "additionalProperties": {"type": "integer"}}  # read as JSON, as read_pairs does
    assert writable(tokenizer, typed, "<arg_key>m</arg_key><arg_value>7</arg_value></tool_call>") == "complete"
    assert writable(tokenizer, typed, "<arg_key>m</arg_key><arg_value>x</arg_value>") == "invalid"
    closed = {**OPEN, "additionalProperties": False}
    assert writable(tokenizer, closed, "<arg_key>m</arg_key>") == "invalid"
    anything = "\n<arg_key>anything</arg_key>\n<arg_value>1</arg_value>\n</tool_call>"
    assert writable(tokenizer, {}, anything) == "complete"


@both_tokenizers
def test_json_values_and_refs(tokenizer):
    schema = plan.spec.parameters
    ok = '<arg_key>city</arg_key><arg_value>A</arg_value><arg_key>days</arg_key><arg_value>2</arg_value>'
    full = ('<arg_key>place</arg_key><arg_value>{"city": "B"}</arg_value><arg_key>tags</arg_key>'
            '<arg_value>["a", "b"]</arg_value><arg_key>budget</arg_key><arg_value>-1.5e3</arg_value>'
            '<arg_key>note</arg_key><arg_value>null</arg_value></tool_call>')
    assert writable(tokenizer, schema, ok + full) == "complete"
    assert writable(tokenizer, schema, ok + '<arg_key>place</arg_key><arg_value>{"town"') == "invalid"  # $ref
    assert writable(tokenizer, schema, ok + '<arg_key>tags</arg_key><arg_value>[1') == "invalid"
    assert writable(tokenizer, schema, ok + '<arg_key>strict</arg_key><arg_value>yes') == "invalid"


def arguments_strategy():
    """Valid arguments for `plan`: every required key, any optional ones, in any order."""
    text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20).filter(
        lambda s: not any(tag in s for tag in ("</arg_value>", "<tool_call>", "</tool_call>", "<|")))
    # inside JSON, llguidance wants DEL escaped (JSON itself allows it raw; json.dumps escapes it unless
    # ensure_ascii=False, as GLM-4.5 writes)
    json_text = text.filter(lambda s: "\x7f" not in s)
    optional = {"unit": st.sampled_from(["celsius", "fahrenheit"]),
                "budget": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10**6, 10**6),
                "tags": st.lists(json_text, max_size=3), "place": st.builds(lambda city: {"city": city}, json_text),
                "note": text, "strict": st.booleans()}
    return st.fixed_dictionaries({"city": text, "days": st.integers(1, 30)}, optional=optional).flatmap(
        lambda arguments: st.permutations(list(arguments.items())).map(dict))


@both_tokenizers
@SETTINGS
@given(arguments=arguments_strategy())
def test_rendered_calls_are_accepted_token_by_token(tokenizer, arguments):
    """GLM-4.5's layout (render_call) and GLM-4.7's (no newlines), after reasoning and text: every token is
    allowed, the call reads back to the same arguments, and they pass the tool's validation."""
    layouts = [render_call(ToolCall(id="1", name="plan", arguments=arguments, syntax="json")),
               render_call(ToolCall(id="2", name="plan", body=pairs(arguments, newlines=False), syntax="xml"))]
    for call in layouts:
        refused, constrained = read(tokenizer, [plan.spec, PYTHON], f"\n<think>Plan it.</think>\nSure. {call}")
        assert refused is None
        assert constrained > 0
        (parsed,) = GLM45.parse(call, ["plan"]).tool_calls
        assert decode_arguments(parsed.body, plan.spec.parameters) == arguments
        plan.args_model.model_validate(arguments)


@both_tokenizers
def test_each_call_of_a_turn_is_constrained_and_the_model_is_free_between_them(tokenizer):
    first = "<tool_call>forecast\n<arg_key>city</arg_key>\n<arg_value>A</arg_value>\n</tool_call>"
    second = "<tool_call>forecast<arg_key>city</arg_key><arg_value>B</arg_value></tool_call>"
    _, one = read(tokenizer, [forecast.spec], first)
    _, other = read(tokenizer, [forecast.spec], second)
    refused, both = read(tokenizer, [forecast.spec], f"{first}\nAnd free text {{'not': xml}} between.\n{second}")
    assert refused is None and both == one + other  # the text between the calls is not constrained
    refused, _ = read(tokenizer, [forecast.spec], f"{first}\n{second.replace('city', 'town')}")
    assert refused is not None and refused.startswith(first)  # the second call is held to the schema too


def merging_tokenizer():
    """A tokenizer without GLM-4.5's tags whose BPE merges across tags, newlines and words (tiktoken-style
    ones merge ``>\\n``; this one merges far more): tokens that end one call and begin the next."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from tiny_glm import SPECIAL_TOKENS

    calls = "<tool_call>forecast\n<arg_key>city</arg_key>\n<arg_value>Beijing</arg_value>\n</tool_call>\n" * 3
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator([calls] * 5, trainer=trainers.BpeTrainer(
        vocab_size=400, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                                   additional_special_tokens=list(SPECIAL_TOKENS[1:]))


def test_tags_as_text_may_share_tokens_with_what_comes_before_and_after():
    tokenizer = merging_tokenizer()
    call = "<tool_call>forecast\n<arg_key>city</arg_key>\n<arg_value>Beijing</arg_value>\n</tool_call>\n"
    ids = tokenizer(call * 2, add_special_tokens=False)["input_ids"]
    assert any(piece.startswith("tool_call>\n<tool_call>") for piece in tokenizer.batch_decode([[i] for i in ids]))
    refused, constrained = read(tokenizer, [forecast.spec], call * 2)
    assert refused is None and constrained > 0
    refused, _ = read(tokenizer, [forecast.spec], call + call.replace("city", "town"))
    assert refused is not None and refused.startswith(call)  # the second call was found inside a token


@both_tokenizers
def test_builtins_are_constrained_and_unknown_names_are_not(tokenizer):
    code = "<tool_call>python\n<arg_key>code</arg_key>\n<arg_value>print('<b>', 1)\n</arg_value>\n</tool_call>"
    assert read(tokenizer, [PYTHON], code)[0] is None
    assert read(tokenizer, [PYTHON], "<tool_call>python\n<arg_key>cmd</arg_key>")[0] is not None
    assert read(tokenizer, [PYTHON], "<tool_call>shell\n<arg_key>cmd</arg_key>\n<arg_value>ls")[1] == 0
    assert read(tokenizer, [forecast.spec], "<tool_call>get_time</tool_call> then text")[1] == 0  # no arguments
    assert read(tokenizer, [forecast.spec], "I would use <tool_call> for " + "x" * 40 + "\nforecast\n")[1] == 0


def test_a_call_already_broken_in_the_prompt_is_let_go():
    tokenizer = TOKENIZERS["tags as tokens"]
    constraint = ToolCallConstraint(tokenizer, [forecast.spec], GLM45)
    prompt = "<|assistant|><tool_call>forecast<arg_key>town</arg_key><arg_value>x"
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    scores = torch.zeros(1, len(tokenizer))
    assert torch.equal(constraint(ids, scores.clone()), scores)  # the registry reports the call to the model


def test_an_xml_schema_that_does_not_compile_leaves_its_calls_free(caplog):
    tokenizer = TOKENIZERS["tags as tokens"]
    broken = ToolSpec(name="broken", parameters={"type": "object", "properties": {"a": {"$ref": "#/$defs/Gone"}}})
    refused, constrained = read(tokenizer, [broken], "<tool_call>broken\n<arg_key>b</arg_key>")
    assert refused is None and constrained == 0
    assert "'broken' is not constrained" in caplog.text


def test_the_tag_spelling_follows_the_tokenizer():
    """llguidance reads every added token as special, so a string literal cannot match GLM-4.5's tags:
    the grammar names the token where there is one, and writes text where there is not."""
    from agent.models.constrained import _llguidance_tokenizer, _tag_spellings

    with_tags, without = (_llguidance_tokenizer(t, t.convert_tokens_to_ids("<|observation|>"))
                          for t in TOKENIZERS.values())
    assert with_tags is not None and without is not None
    assert _tag_spellings(with_tags)["<arg_key>"] == "<arg_key>"
    assert _tag_spellings(without)["<arg_key>"] == '"<arg_key>"'


# --- end to end: a tiny random GLM-4.5 under TransformersModel -----------------------------------------

CLOSE = None  # a script step: the model writes (under the constraint) until its call's </tool_call>


class Script(LogitsProcessor):
    """Steers a random model through a turn: each text step is forced token by token; at a ``CLOSE``
    step the model writes on its own until it has closed the call it is in."""

    def __init__(self, tokenizer, steps: list[str | None]):
        self.tokenizer = tokenizer
        self.steps = [None if step is None else tokenizer(step, add_special_tokens=False)["input_ids"]
                      for step in steps]
        self.start: int | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.start is None:
            self.start = input_ids.shape[1]
        forced = self._next(input_ids[0, self.start:].tolist())
        if forced is not None:
            keep = scores[0, forced].clone()
            scores[0] = float("-inf")
            scores[0, forced] = keep
        return scores

    def _next(self, written: list[int]) -> int | None:
        at = 0
        for step in self.steps:
            if step is None:
                closed = self._closed(written, at)
                if closed is None:
                    return None
                at = closed
                continue
            for token in step:
                if at == len(written):
                    return token
                at += 1
        return None

    def _closed(self, written: list[int], at: int) -> int | None:
        """Where the call the model is writing from ``at`` on was closed (after ``</tool_call>``), if it was."""
        text = ""
        for end in range(at, len(written)):
            text = text[-len("</tool_call>"):] + self.tokenizer.decode(written[end:end + 1])
            if "</tool_call>" in text:
                return end + 1
        return None


class Scripted(TransformersModel):
    script: list[str | None] = []

    def _logits_processors(self, settings, tools):
        processors = super()._logits_processors(settings, tools)
        processors.insert(0, Script(self.tokenizer, self.script))  # first: the constraint has the last word
        return processors


@pytest.fixture(scope="module", params=["tags as tokens", "tags as text"])
def tiny_glm45(request, tmp_path_factory):
    tokenizer = build_tokenizer(glm45=request.param == "tags as tokens")
    path = build_tiny_glm(tmp_path_factory.mktemp("glm45"), architecture="glm4_moe", seed=3, tokenizer=tokenizer)
    return Scripted(path, reuse_cache=False)


SCRIPTS = {
    "reasoning, then a call": ["\n<think>The user wants a forecast: I call the tool.</think>\n<tool_call>forecast\n",
                               CLOSE, "<|observation|>"],
    "two calls, 4.5 then 4.7 layout": ["\n<think></think>\nLet me check.\n<tool_call>forecast\n", CLOSE,
                                       "\n<tool_call>forecast<arg_key>", CLOSE, "<|observation|>"],
}


@pytest.mark.parametrize("script", list(SCRIPTS))
@pytest.mark.parametrize("temperature, seed", [(0.0, 0), (1.0, 1), (1.5, 2)])
async def test_a_random_glm45_writes_only_calls_the_tool_accepts(tiny_glm45, script, temperature, seed):
    model = tiny_glm45
    model.script = SCRIPTS[script]
    prompt = GLM45.render([Message(role="user", content="Weather in Beijing?")], [forecast.spec])
    settings = ModelSettings(max_new_tokens=500, temperature=temperature, constrained_calls=True)
    torch.manual_seed(seed)
    completion = await model.complete(prompt, settings, tools=[forecast.spec])
    assert completion.stop_reason == "observation", completion.text
    turn = GLM45.parse(completion.text, ["forecast"], completion.stop_reason)
    assert len(turn.tool_calls) == SCRIPTS[script].count(CLOSE)
    for call in turn.tool_calls:
        assert call.name == "forecast"
        forecast.args_model.model_validate(decode_arguments(call.body, forecast.spec.parameters))

    free = await model.complete(prompt, ModelSettings(max_new_tokens=60), tools=[forecast.spec])
    assert free.stop_reason == "length"  # left alone, the random model never closes its call


async def test_a_glm45_model_constrains_calls_to_builtins_alone(tiny_glm45):
    """GLM-4.5+ writes built-ins' calls as typed pairs too: with only `python`, its one key is all that can come."""
    model = tiny_glm45
    model.script = ["<think></think>\n<tool_call>python\n"]
    prompt = GLM45.render([Message(role="user", content="Run some code.")], [PYTHON])
    for constrained in (True, False):
        settings = ModelSettings(max_new_tokens=100, constrained_calls=constrained)
        completion = await model.complete(prompt, settings, tools=[PYTHON])
        body = completion.text.partition("<tool_call>python\n")[2]
        assert body.lstrip().startswith("<arg_key>code</arg_key>") == constrained, body
