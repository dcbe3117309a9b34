"""Constrained tool calls: what the LogitsProcessor lets a model write, and the processor on tiny GLMs."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import pytest
import torch
from pydantic import BaseModel, Field
from tiny_glm import ADD_TRAJECTORIES, add, build_tiny_glm, build_tokenizer, trained_tiny_glm, training_examples
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

from agent.messages import Message, ToolSpec
from agent.models.constrained import ToolCallConstraint
from agent.models.transformers import TransformersModel
from agent.policy import ModelSettings
from agent.protocol import glm4
from agent.tool import tool

CONSTRAINED = ModelSettings(max_new_tokens=60, constrained_calls=True)
FREE = ModelSettings(max_new_tokens=60)


class Place(BaseModel):
    city: str
    country: str = "CN"


@tool
def weather(place: Place, days: int = 1, unit: str = "celsius", tags: list[str] | None = None) -> str:
    """Forecast for a place.

    Args:
        place: where
        days: how many days
        unit: celsius or fahrenheit
        tags: extra labels
    """
    return "sunny"


@tool
def forecast(city: Annotated[str, Field(max_length=12)], days: int = 1,
             unit: Literal["celsius", "fahrenheit"] = "celsius") -> str:
    """Forecast for a city.

    Args:
        city: the city's name
        days: how many days
        unit: the temperature unit
    """
    return "sunny"


@pytest.fixture(scope="session")
def tiny_glm_dir(tmp_path_factory):
    return build_tiny_glm(tmp_path_factory.mktemp("glm-constrained"), seed=1)


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory):
    return trained_tiny_glm(tmp_path_factory.getbasetemp())


@pytest.mark.parametrize("text, status", [
    ("", "partial"),
    ('{"place": {"city": "Bei', "partial"),
    ('{"place": {"city": "Beijing"}, "days": 3}', "complete"),
    ('{"place": {"city": "Beijing", "country": "CN"}, "tags": ["a", "b"]}', "complete"),
    ('{"place": {"city": "Beijing"}, "tags": [1]}', "invalid"),          # items must be strings
    ('{"place": {"town"', "invalid"),                                      # not a field of Place ($ref)
    ('{"days": 3}', "invalid"),                                            # closes without required 'place'
    ('{"place": {"city": "A"}, "tags": null}', "complete"),                # Optional: anyOf with null
    ('{"place": {"city": "A\\n\\u4e2d"}}', "complete"),                    # escapes
    ('{"place": {"city": "A\nB"}}', "invalid"),                            # raw newline inside a string
    ('{"place": {"city": "A"}}\n', "complete"),
    ('{"place": {"city": "A"}} more', "invalid"),
    ('{"place":' + " " * 11 + "{", "invalid"),                                # endless whitespace
    ('{"place": {"city": "A"}, "days": 1.5}', "invalid"),                  # integer
    ('{"place": {"city": "A"}, "days": -', "partial"),
    ('{"place": {"city": "A"}, "days": 1, "unit": "c", "tags": [], ', "invalid"),  # no key left after ','
])
def test_schema_prefix(text, status):
    assert writable(weather.spec.parameters, text) == status


def test_enum_const_and_free_schemas():
    assert writable({"enum": ["red", "green"]}, '"gr') == "partial"
    assert writable({"enum": ["red", "green"]}, '"blue"') == "invalid"
    assert writable({"const": 3}, "3") == "complete"
    free = {"type": "object", "additionalProperties": True}
    assert writable(free, '{"anything": [1, {"x": null}], "b": true}') == "complete"
    assert writable({}, '[1, "two", {"three": 3.0e1}]') == "complete"
    # JSON Schema's default: keys a schema does not declare are allowed unless it says otherwise
    declared = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert writable(declared, '{"a": 1, "note": "x"}') == "complete"
    assert writable({**declared, "additionalProperties": False}, '{"a": 1, "note": "x"}') == "invalid"
    assert writable({"type": "object", "properties": {"x": {"type": "number"}}}, '{"x": -1.5e3}') == "complete"
    # keywords the grammar does not enforce are ignored, not a reason to refuse the schema
    assert writable({"type": "string", "format": "no-such-format"}, '"anything"') == "complete"


def writable(schema: dict, text: str) -> str:
    """What the constraint makes of ``text`` as the body of a call to a tool with ``schema``: ``"partial"``
    (the call may only go on), ``"complete"`` (it may end) or ``"invalid"`` (it must end now: nothing but
    ``<|observation|>`` is left, so the call parser reports the body to the model)."""
    tokenizer = TOKENIZER
    constraint = ToolCallConstraint(tokenizer, [ToolSpec(name="probe", parameters=schema)])
    prompt = "<|user|>\nhi<|assistant|>probe\n" + text
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    allowed = (constraint(ids, torch.zeros(1, len(tokenizer)))[0] > float("-inf")).nonzero().flatten().tolist()
    end = tokenizer.convert_tokens_to_ids("<|observation|>")
    return "invalid" if allowed == [end] else "complete" if end in allowed else "partial"


TOKENIZER = build_tokenizer()


def test_processor_makes_a_random_model_write_a_valid_call(tiny_glm_dir):
    """Through transformers' own generate(): after `forecast\\n`, only schema-valid JSON, then the stop."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_glm_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_glm_dir)
    prompt = glm4.render_prompt([Message(role="user", content="Weather in Beijing?")], [forecast.spec]) + "forecast\n"
    input_ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]

    def body(processors: list) -> tuple[str, int]:
        output = model.generate(input_ids, max_new_tokens=80, do_sample=False,
                                logits_processor=LogitsProcessorList(processors))
        new = output[0, input_ids.shape[1]:].tolist()
        return tokenizer.decode(new, skip_special_tokens=False), new[-1]

    free_text, _ = body([])
    with pytest.raises(ValueError):
        json.loads(free_text)  # a random model writes noise
    constraint = ToolCallConstraint(tokenizer, [forecast.spec])
    text, last = body([constraint])
    assert last == tokenizer.convert_tokens_to_ids("<|observation|>")
    arguments = json.loads(text.removesuffix("<|observation|>"))
    forecast.args_model.model_validate(arguments)  # fits the schema: required city, at most 12 characters
    assert constraint.constrained_tokens > 0


async def test_sampled_calls_fit_the_schema_too(tiny_glm_dir):
    """transformers applies temperature and top-p after the constraint: sampling draws among valid tokens."""
    model = TransformersModel(tiny_glm_dir, reuse_cache=False)
    prompt = glm4.render_prompt([Message(role="user", content="Weather in Beijing?")], [forecast.spec]) + "forecast\n"
    settings = ModelSettings(max_new_tokens=80, temperature=1.5, top_p=0.5, constrained_calls=True)
    for seed in range(3):
        torch.manual_seed(seed)
        completion = await model.complete(prompt, settings, tools=[forecast.spec])
        assert completion.stop_reason == "observation"
        forecast.args_model.model_validate(json.loads(completion.text))


def test_a_schema_that_does_not_compile_leaves_its_calls_free(caplog):
    broken = ToolSpec(name="broken", parameters={"type": "object", "properties": {"a": {"$ref": "#/$defs/Gone"}}})
    constraint = ToolCallConstraint(TOKENIZER, [broken])
    ids = TOKENIZER("<|assistant|>broken\n{", add_special_tokens=False, return_tensors="pt")["input_ids"]
    scores = torch.zeros(1, len(TOKENIZER))
    assert torch.equal(constraint(ids, scores.clone()), scores)
    assert constraint.constrained_tokens == 0
    assert "'broken' is not constrained" in caplog.text and "/$defs/Gone" in caplog.text


def test_a_tokenizer_the_grammar_cannot_read_leaves_calls_free(caplog):
    class RemoteCodeTokenizer:  # not a fast (Rust) tokenizer, like the non `-hf` GLM-4 checkpoints' own
        convert_tokens_to_ids = staticmethod(TOKENIZER.convert_tokens_to_ids)

    constraint = ToolCallConstraint(RemoteCodeTokenizer(), [forecast.spec])
    ids = TOKENIZER("<|assistant|>forecast\n{", add_special_tokens=False, return_tensors="pt")["input_ids"]
    scores = torch.zeros(1, len(TOKENIZER))
    assert torch.equal(constraint(ids, scores.clone()), scores)
    assert "Tool calls are not constrained" in caplog.text


@pytest.mark.slow  # trains the tiny GLM (seconds) when it is the first to need it
async def test_builtin_tools_and_answers_are_left_alone(trained_dir):
    python = ToolSpec(name="python", builtin="python")
    model = TransformersModel(trained_dir)
    prompt, _ = training_examples(ADD_TRAJECTORIES[3:], [add])[0]  # "Say hello." -> an answer
    constrained = await model.complete(prompt, CONSTRAINED, tools=[add.spec, python])
    free = await model.complete(prompt, FREE)
    assert constrained.text == free.text == "\nHello!"


@pytest.mark.slow  # trains the tiny GLM (seconds) when it is the first to need it
async def test_trained_calls_are_unchanged_by_the_constraint(trained_dir):
    model = TransformersModel(trained_dir)
    for prompt, target in training_examples(ADD_TRAJECTORIES[:3], [add]):
        completion = await model.complete(prompt, CONSTRAINED, tools=[add.spec])
        assert completion.text + ("<|observation|>" if completion.stop_reason == "observation" else "<|user|>") == target


@pytest.mark.slow  # trains the tiny GLM (seconds) when it is the first to need it
async def test_constrained_generate_on_a_prompt_the_model_never_saw(trained_dir):
    model = TransformersModel(trained_dir)
    turn = await model.generate([Message(role="user", content="What is 31 plus 4 plus 12?")], [add.spec],
                                CONSTRAINED)
    if turn.tool_calls:  # whatever the tiny model decides to call, the body is valid JSON for `add`
        (call,) = turn.tool_calls
        assert call.name == "add" and turn.stop_reason == "observation"
        add.args_model.model_validate(json.loads(call.body))
