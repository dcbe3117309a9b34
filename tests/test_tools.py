"""@tool, Tool subclasses and the registry: schemas, validation, return values, errors as observations."""

import asyncio
import json
from enum import Enum
from typing import Literal, Optional

import pytest
from pydantic import BaseModel

from agent import Tool, ToolContext, ToolOutput, tool
from agent.errors import ToolDefinitionError
from agent.messages import ToolCall
from agent.policy import Policy
from agent.protocol.near_json import parse_json_arguments
from agent.registry import ToolRegistry
from agent.tool import parse_docstring


class Trip(BaseModel):
    city: str
    nights: int = 1


class Color(str, Enum):
    red = "red"
    blue = "blue"


@tool
def plan(trip: Trip, mode: Literal["air", "rail"] = "rail", budget: Optional[float] = None,
         color: Color = Color.red) -> dict:
    """Plan a trip.

    Args:
        trip: where and how long
        mode: how to travel; air is
            faster but dearer
        budget: at most this many euros
        color: ticket colour
    """
    return {"city": trip.city, "nights": trip.nights, "mode": mode, "budget": budget, "color": color.value}


def call(name, body="", arguments=None, syntax="glm4"):
    return ToolCall(id="c1", name=name, body=body, arguments=arguments, syntax=syntax)


@pytest.fixture
def context(tmp_path):
    return ToolContext(run_id="t", artifacts_dir=tmp_path / "run", policy=Policy())


def run(registry, tool_call, context):
    return asyncio.run(registry.call(tool_call, context))


def test_schema_from_hints_and_docstring():
    params = plan.spec.parameters
    assert plan.spec.description == "Plan a trip."
    assert params["required"] == ["trip"]
    props = params["properties"]
    assert props["mode"] == {"default": "rail", "description": "how to travel; air is faster but dearer",
                             "enum": ["air", "rail"], "type": "string"}
    assert props["budget"]["anyOf"] == [{"type": "number"}, {"type": "null"}]
    assert props["trip"]["$ref"] == "#/$defs/Trip"
    assert params["$defs"]["Trip"]["properties"]["city"] == {"type": "string"}
    assert "title" not in params and "title" not in props["mode"]
    assert params["$defs"]["Color"]["enum"] == ["red", "blue"]


def test_valid_call_with_nested_model(context):
    registry = ToolRegistry([plan])
    obs = run(registry, call("plan", '{"trip": {"city": "Oslo", "nights": 2}, "mode": "air"}'), context)
    assert not obs.is_error
    assert '"city": "Oslo"' in obs.content and '"mode": "air"' in obs.content


def test_validation_error_names_the_field_and_type(context):
    registry = ToolRegistry([plan])
    obs = run(registry, call("plan", '{"trip": {"city": "Oslo", "nights": "many"}}'), context)
    assert obs.is_error
    assert "'trip.nights'" in obs.content and "integer" in obs.content
    obs = run(registry, call("plan", '{"mode": "car"}'), context)
    assert "'trip' is required" in obs.content and "'mode'" in obs.content and "'air' or 'rail'" in obs.content


def test_a_key_a_nested_model_does_not_declare_is_reported_not_dropped(context):
    assert plan.spec.parameters["$defs"]["Trip"]["additionalProperties"] is False  # the model is told, too
    obs = run(ToolRegistry([plan]), call("plan", '{"trip": {"city": "Oslo", "hotel": "Grand"}}'), context)
    assert obs.is_error and "'trip'" in obs.content and "'hotel' was unexpected" in obs.content


def test_malformed_body_and_unknown_tool_become_observations(context):
    registry = ToolRegistry([plan])
    obs = run(registry, call("plan", "please plan a trip to Oslo"), context)
    assert obs.is_error and "Could not read the call to 'plan'" in obs.content and "Expected JSON" in obs.content
    obs = run(registry, call("fly", "{}"), context)
    assert obs.is_error and obs.content == "There is no tool named 'fly'. Available tools: plan."


def test_tolerant_json():
    assert parse_json_arguments('```json\n{"a": 1,}\n```') == {"a": 1}
    assert parse_json_arguments("{'a': 'x', 'b': True} and then some text") == {"a": "x", "b": True}
    assert parse_json_arguments('{"s": "a } brace"} trailing {') == {"s": "a } brace"}
    assert parse_json_arguments("") == {}
    with pytest.raises(ValueError):
        parse_json_arguments("[1, 2]")


def test_async_tool_and_exception(context):
    @tool
    async def slow_double(x: int) -> int:
        """Double x."""
        await asyncio.sleep(0)
        return 2 * x

    @tool
    def broken() -> str:
        """Always fails."""
        raise RuntimeError("disk on fire")

    registry = ToolRegistry([slow_double, broken])
    assert run(registry, call("slow_double", '{"x": 21}'), context).content == "42"
    obs = run(registry, call("broken"), context)
    assert obs.is_error and obs.content == "broken raised RuntimeError: disk on fire"


def test_return_values(context):
    from PIL import Image

    class Point(BaseModel):
        x: int
        y: int

    @tool
    def point() -> Point:
        """A point."""
        return Point(x=1, y=2)

    @tool
    def image() -> object:
        """A picture."""
        return Image.new("RGB", (4, 3), "red")

    @tool
    def listing() -> list:
        """A list."""
        return [1, "二"]

    @tool
    def nothing() -> None:
        """Nothing."""

    @tool
    def empty() -> str:
        """An empty string."""
        return ""

    @tool
    def flag() -> bool:
        """A bool."""
        return True

    registry = ToolRegistry([point, image, listing, nothing, empty, flag])
    assert run(registry, call("point"), context).content == '{"x":1,"y":2}'
    assert run(registry, call("listing"), context).content == '[1, "二"]'
    assert run(registry, call("nothing"), context).content == "Done (no output)."
    assert run(registry, call("empty"), context).content == "Done (no output)."
    assert run(registry, call("flag"), context).content == "true"
    obs = run(registry, call("image"), context)
    (artifact,) = obs.artifacts
    assert artifact.path.read_bytes().startswith(b"\x89PNG") and artifact.path.parent == context.artifacts_dir
    with Image.open(artifact.path) as decoded:
        assert decoded.size == (4, 3)


def test_tool_output_parts_and_context(context):
    @tool
    def quotes(ctx: ToolContext) -> list:
        """Two quotes."""
        ctx.state["seen"] = ctx.run_id
        return [ToolOutput(text="one", metadata="quote_result [0†source]"),
                ToolOutput(text="two", metadata="quote_result [1†source]")]

    registry = ToolRegistry([quotes])
    assert "ctx" not in quotes.spec.parameters["properties"]
    obs = run(registry, call("quotes"), context)
    assert [p.metadata for p in obs.parts] == ["quote_result [0†source]", "quote_result [1†source]"]
    assert obs.content == "one\n\ntwo" and context.state["seen"] == "t"


def test_class_based_tool_keeps_state(context):
    class Counter(Tool):
        name = "counter"
        description = "Count up."

        def __init__(self):
            self.total = 0

        def forward(self, step: int = 1) -> int:
            """Count.

            Args:
                step: how much to add
            """
            self.total += step
            return self.total

    counter = Counter()
    registry = ToolRegistry([counter])
    assert counter.spec.parameters["properties"]["step"]["description"] == "how much to add"
    run(registry, call("counter", '{"step": 2}'), context)
    assert run(registry, call("counter", "{}"), context).content == "3"


def test_chat_api_json_syntax_is_parsed_as_json(context):
    registry = ToolRegistry([plan])
    obs = run(registry, call("plan", '{"trip": {"city": "Rome"},}', syntax="json"), context)
    assert not obs.is_error and "Rome" in obs.content


def test_definition_errors():
    @tool
    def a() -> str:
        """A."""

    @tool(name="a")
    def other() -> str:
        """Other."""

    with pytest.raises(ToolDefinitionError, match="Two tools are named 'a'"):
        ToolRegistry([a, other])
    with pytest.raises(ToolDefinitionError, match=r"\*args"):
        ToolRegistry([tool(lambda *xs: None, name="star")])
    with pytest.raises(ToolDefinitionError, match="Unknown built-in tool 'shell'"):
        ToolRegistry(["shell"])
    with pytest.raises(ToolDefinitionError, match="must be letters"):
        ToolRegistry([tool(lambda: None, name="bad name")])


def test_docstring_parser():
    summary, args = parse_docstring("Do it.\n\nMore words.\n\nArgs:\n    x (int): the x\n    y: the y\n        on two lines\n\nReturns:\n    z: not an arg\n")
    assert summary == "Do it.\n\nMore words."
    assert args == {"x": "the x", "y": "the y on two lines"}


def test_builtin_raw_bodies_through_a_chat_api(context):
    """Chat APIs send JSON; some pass a GLM-4 raw body through. Code that contains braces stays code."""

    class Echo(Tool):
        name = "python"
        builtin = "python"
        builtin_prompt = "Runs the code it is sent."

        def parse_body(self, body):
            return {"code": body}

        def forward(self, code: str) -> str:
            return f"ran {code!r}"

    registry = ToolRegistry([Echo()])
    as_json = run(registry, call("python", '{"code": "1 + 1"}', syntax="json"), context)
    assert as_json.content == "ran '1 + 1'"
    raw = run(registry, call("python", 'd = {"a": 1}\nprint(d["a"])', syntax="json"), context)
    assert raw.content == """ran 'd = {"a": 1}\\nprint(d["a"])'"""
    dict_literal = run(registry, call("python", '{"a": 1}', syntax="json"), context)
    assert dict_literal.content == """ran '{"a": 1}'"""  # not the tool's parameters: it is code


def test_policy_must_enable_builtins():
    policy = Policy(tools={"enabled": ["python"]})
    with pytest.raises(ToolDefinitionError, match="does not enable the 'cogview' tool"):
        ToolRegistry(["cogview"], policy=policy)


@pytest.mark.parametrize("depth", [300, 3000, 100_000])
@pytest.mark.parametrize("syntax", ["glm4", "json"])
def test_deeply_nested_arguments_are_an_observation_not_a_crash(depth, syntax, tmp_path):
    """Issue 10.15: nested JSON once ended the run with status=error."""
    from agent import Agent
    from agent.models import ModelTurn, ScriptedModel

    @tool
    def echo(data: dict) -> str:
        """Echo.

        Args:
            data: anything
        """
        return "echoed"

    body = '{"data": ' + '{"a": ' * depth + "1" + "}" * depth + "}"
    calls = [ToolCall(id="c1", name="echo", body=body, syntax=syntax)]
    turns = [ModelTurn(content="", tool_calls=calls), "\nI could not send that."]
    agent = Agent(model=ScriptedModel(turns), tools=[echo], transcript=tmp_path / "t.jsonl")
    events = list(agent.stream("go"))
    agent.close()
    result = events[-1].result
    assert result.status == "answered", result.error
    observation = result.steps[0].observations[0]
    assert observation.is_error or observation.content == "echoed"
    if depth > 1000:
        assert observation.is_error and "nested" in observation.content


# ----------------------------------------------------------------------------------------------
# Tool.from_schema: an OpenAI function spec and a handler (issue 11.3)

BOOKING = {"type": "function", "function": {
    "name": "book_trip", "description": "Book a trip.",
    "parameters": {"type": "object", "required": ["from", "legs"], "properties": {
        "from": {"type": "string", "description": "city of departure"},
        "class": {"type": "string", "enum": ["economy", "business"]},
        "legs": {"type": "array", "items": {"type": "object", "required": ["to", "nights"],
                                            "properties": {"to": {"type": "string"}, "nights": {"type": "integer"}}}},
        "budget": {"type": "number"},
        "traveller": {"type": "object", "properties": {"name": {"type": "string"}}},
    }}}}


def test_a_tool_from_an_openai_spec_runs_through_the_loop():
    from agent import Agent
    from agent.models import ModelTurn, ScriptedModel

    seen = []

    async def book(args):
        seen.append(args)
        return {"booked": len(args["legs"])}

    booking = Tool.from_schema(BOOKING, book)
    assert booking.spec.parameters == BOOKING["function"]["parameters"]  # the model sees the schema as given
    arguments = {"from": "Beijing", "class": "business", "budget": 1200,
                 "legs": [{"to": "Shanghai", "nights": 2}, {"to": "Xi'an", "nights": 1}],
                 "traveller": {"name": "Li", "loyalty": "gold"}}
    json_call = ToolCall(id="c2", name="book_trip", body=json.dumps(arguments), syntax="json")
    agent = Agent(model=ScriptedModel([f"book_trip\n{json.dumps(arguments)}",
                                       ModelTurn(content="", tool_calls=[json_call]),
                                       'book_trip\n{"from": "Beijing", "legs": [{"to": "Shanghai", "nights": "two"}], '
                                       '"class": "first"}', "\nBooked."]), tools=[booking])
    result = agent.run("Book it")
    agent.close()
    assert result.status == "answered"
    assert seen == [arguments, arguments]  # integers stay integers, keys the schema allows are kept
    assert isinstance(seen[0]["budget"], int) and seen[0]["traveller"]["loyalty"] == "gold"
    first, second, bad = (step.observations[0] for step in result.steps[:3])
    assert first.content == second.content == '{"booked": 2}'
    assert bad.is_error and "'legs.0.nights' 'two' is not of type 'integer'" in bad.content
    assert "'class' 'first' is not one of ['economy', 'business']" in bad.content


def test_schema_tools_refuse_bad_specs_and_take_sync_handlers(context):
    with pytest.raises(ToolDefinitionError, match="not valid JSON Schema"):
        Tool.from_schema({"name": "x", "parameters": {"type": "object", "properties": {"a": {"type": "wrong"}}}},
                         lambda args: None)
    with pytest.raises(ToolDefinitionError, match="must be letters"):
        Tool.from_schema({"name": "bad name"}, lambda args: None)
    echo = Tool.from_schema({"name": "echo", "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}}},
                            lambda args: args["n"] * 2)
    observation = run(ToolRegistry([echo]), call("echo", '{"n": 21}'), context)
    assert observation.content == "42"


def test_tool_parameters_named_like_keywords_or_with_underscores(context):
    from typing import Annotated

    from pydantic import Field

    @tool
    def fly(from_: Annotated[str, Field(alias="from")], _class: str = "economy") -> str:
        """Fly somewhere.

        Args:
            from_: departure
            _class: cabin
        """
        return f"{from_} {_class}"

    assert set(fly.spec.parameters["properties"]) == {"from", "_class"} and fly.spec.parameters["required"] == ["from"]
    registry = ToolRegistry([fly])
    assert run(registry, call("fly", '{"from": "Paris", "_class": "business"}'), context).content == "Paris business"
    assert run(registry, call("fly", '{"from": "Oslo"}'), context).content == "Oslo economy"
