"""Property-based tests of the completion parser and the near-JSON reader, over generated schemas.

Each example draws a tool schema (nested objects, arrays, enums, keyword and unicode names), values
that satisfy it, and writes calls the ways models and servers write them: clean JSON, Python
literals, single quotes with escaped apostrophes, trailing commas, bare keys, code fences, several
calls with or without ``<|assistant|>`` between them, a thought before the call. Every call must come
back with the same name and exactly the same values and JSON types, and pass its own schema.
"""

import json
import keyword

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent import Tool
from agent.protocol.glm4 import parse_completion
from agent.protocol.near_json import parse_json_arguments

SETTINGS = settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", 150)), deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Strings models write, minus what cannot occur inside a call's text: special tokens are tokens,
# not characters, and a backtick fence inside a fenced body would end the fence.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="`<"), max_size=12)
PROPERTY = st.one_of(st.sampled_from(["from", "class", "_class", "True", "None", "it's", "a b", "名字", "x"]),
                     st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True), TEXT)
TOOL_NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_\-]{0,20}", fullmatch=True)


def leaf_schemas():
    return st.one_of(
        st.just({"type": "string"}), st.just({"type": "integer"}), st.just({"type": "number"}),
        st.just({"type": "boolean"}), st.just({"type": "null"}),
        st.lists(st.sampled_from(["True", "False", "None", "it's", 'say "hi"', "air", "1"]), min_size=1,
                 max_size=4, unique=True).map(lambda values: {"type": "string", "enum": values}))


def object_schema(children):
    return st.dictionaries(PROPERTY, children, max_size=4).flatmap(lambda props: st.builds(
        lambda required, extra: {"type": "object", "properties": props, "required": required,
                                 **({} if extra else {"additionalProperties": False})},
        st.lists(st.sampled_from(sorted(props)), unique=True) if props else st.just([]), st.booleans()))


SCHEMAS = st.recursive(leaf_schemas(), lambda children: st.one_of(
    st.builds(lambda items: {"type": "array", "items": items}, children), object_schema(children)), max_leaves=8)
PARAMETERS = object_schema(SCHEMAS)


def values_for(schema):
    """A strategy of values valid under ``schema`` (as generated above)."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema["type"]
    if kind == "string":
        return TEXT
    if kind == "integer":
        return st.integers(-(10**20), 10**20)
    if kind == "number":
        return st.one_of(st.integers(-1000, 1000), st.floats(allow_nan=False, allow_infinity=False))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(values_for(schema["items"]), max_size=3)
    props = schema["properties"]
    optional = [key for key in props if key not in schema["required"]]
    return st.builds(lambda required, chosen: {**required, **chosen},
                     st.fixed_dictionaries({key: values_for(props[key]) for key in schema["required"]}),
                     st.lists(st.sampled_from(optional), unique=True).flatmap(
                         lambda keys: st.fixed_dictionaries({key: values_for(props[key]) for key in keys}))
                     if optional else st.just({}))


def near_json(value, rng):
    """``value`` written as a careless model would: single quotes, Python words, bare keys, trailing commas."""
    if isinstance(value, dict):
        items = [f"{_key(k, rng)}: {near_json(v, rng)}" for k, v in value.items()]
        return "{" + ", ".join(items) + ("," if items and rng.draw(st.booleans()) else "") + "}"
    if isinstance(value, list):
        items = [near_json(v, rng) for v in value]
        return "[" + ", ".join(items) + ("," if items and rng.draw(st.booleans()) else "") + "]"
    if isinstance(value, str):
        return _single_quoted(value) if rng.draw(st.booleans()) else json.dumps(value, ensure_ascii=False)
    if value is None or isinstance(value, bool):
        return rng.draw(st.sampled_from([repr(value), json.dumps(value)]))
    return json.dumps(value)


def _key(key, rng):
    bare = key.isidentifier() and not keyword.iskeyword(key) and key not in ("true", "false", "null")
    return key if bare and rng.draw(st.booleans()) else near_json(key, rng)


def _single_quoted(text):
    inner = json.dumps(text, ensure_ascii=False)[1:-1].replace('\\"', '"').replace("'", "\\'")
    return f"'{inner}'"


def write_body(args, style, rng):
    if style == "clean":
        return json.dumps(args, ensure_ascii=rng.draw(st.booleans()))
    if style == "indented":
        return json.dumps(args, ensure_ascii=False, indent=4)
    if style == "python":
        return repr(args)
    if style == "near":
        return near_json(args, rng)
    return "```json\n" + json.dumps(args, ensure_ascii=False) + "\n```"


STYLES = st.sampled_from(["clean", "indented", "python", "near", "fenced"])
SEPARATORS = st.sampled_from(["<|assistant|>", "", "\n", "\n\n"])  # "": a server stripped <|assistant|>
THOUGHT = st.text(st.characters(whitelist_categories=("L", "Zs"), blacklist_characters="`<"), min_size=1,
                  max_size=30).map(str.strip).filter(bool).map(lambda t: t + ".")


def same(a, b):
    """Equal values with equal JSON types (1 is not 1.0 is not True)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@SETTINGS
@given(data=st.data())
def test_every_call_round_trips_exactly(data):
    tools = data.draw(st.lists(st.tuples(TOOL_NAME, PARAMETERS), min_size=1, max_size=3, unique_by=lambda t: t[0]))
    specs = {name: Tool.from_schema({"name": name, "parameters": params}, lambda args: None) for name, params in tools}
    wanted = data.draw(st.lists(st.sampled_from(tools).flatmap(
        lambda tool: st.tuples(st.just(tool[0]), values_for(tool[1]))), min_size=1, max_size=3))
    parts = [name + "\n" + write_body(args, data.draw(STYLES), data) for name, args in wanted]
    text = parts[0]
    for part in parts[1:]:
        text += data.draw(SEPARATORS) + part
    thought = data.draw(st.none() | THOUGHT.filter(lambda t: t not in specs))
    if thought:
        text = data.draw(st.sampled_from(["\n", ""])) + thought + data.draw(SEPARATORS) + text
    stop = "observation" if thought else data.draw(st.sampled_from(["observation", "eos", None]))
    text += data.draw(st.sampled_from(["", "<|observation|>"]))

    turn = parse_completion(text, list(specs), stop)

    assert [call.name for call in turn.tool_calls] == [name for name, _ in wanted], text
    assert turn.content == (thought or ""), text
    for call, (name, args) in zip(turn.tool_calls, wanted):
        parsed = parse_json_arguments(call.body)
        assert same(parsed, args), (call.body, args)
        assert same(specs[name].validate(parsed), args)


SPECIAL = st.sampled_from(["<|assistant|>", "<|observation|>", "<|user|>", "<|endoftext|>", "\n", "{", "}", "```",
                           "'", '"', "\\", "python", "get_weather"])


@SETTINGS
@given(pieces=st.lists(st.one_of(st.text(max_size=20), SPECIAL), max_size=12),
       names=st.lists(st.one_of(TOOL_NAME, st.just("python"), st.just("get_weather")), max_size=4),
       stop=st.sampled_from(["observation", "eos", "user", "length", None]))
def test_the_parser_never_raises_and_never_invents_text(pieces, names, stop):
    text = "".join(pieces)
    turn = parse_completion(text, names, stop)
    for call in turn.tool_calls:
        assert call.name and call.id
        assert call.body in text
    for line in turn.content.split("\n"):
        assert line in text


@SETTINGS
@given(st.text(max_size=60))
@example("{'a': 'it\\'s'")  # unterminated
@example("{" * 5000)
def test_the_json_reader_only_ever_says_value_error(text):
    try:
        assert isinstance(parse_json_arguments(text), dict)
    except ValueError:
        pass


def test_repairs_never_touch_string_contents():
    assert parse_json_arguments("{'mode': 'True', 'on': True, 'x': None}") == {"mode": "True", "on": True, "x": None}
    assert parse_json_arguments(r"{'text': 'it\'s \"so\"'}") == {"text": 'it\'s "so"'}
    assert parse_json_arguments('{"note": "None, False, [1,]",}') == {"note": "None, False, [1,]"}
    assert parse_json_arguments("{city: 'Paris', 'days': 3,}") == {"city": "Paris", "days": 3}
    assert parse_json_arguments("{'s': '\\x01'}") == {"s": "\x01"}  # a Python escape JSON lacks


NAMES = ["python", "get_weather", "get_time", "simple_browser", "cogview"]


def calls(turn):
    return [(call.name, call.body) for call in turn.tool_calls]


def test_calls_glued_together_by_a_server_that_strips_special_tokens():
    turn = parse_completion('get_weather\n{"city": "Paris"}get_time\n{"tz": "CET"}', NAMES, "eos")
    assert calls(turn) == [("get_weather", '{"city": "Paris"}'), ("get_time", '{"tz": "CET"}')]
    code = "python\n```python\nprint(1)\n```python\n```python\nprint(2)\n```"
    assert calls(parse_completion(code, NAMES, None)) == [("python", "```python\nprint(1)\n```"),
                                                          ("python", "```python\nprint(2)\n```")]
    browser = 'simple_browser\nsearch("a")\nsimple_browser\nmclick([0, 1])'
    assert calls(parse_completion(browser, NAMES, "observation")) == [("simple_browser", 'search("a")'),
                                                                       ("simple_browser", "mclick([0, 1])")]


def test_a_thought_before_a_call_without_a_separator():
    turn = parse_completion('Let me look that up.\nget_weather\n{"city": "Oslo"}', NAMES, "observation")
    assert turn.content == "Let me look that up." and calls(turn) == [("get_weather", '{"city": "Oslo"}')]
    glued = parse_completion('我先查一下。get_weather\n{"city": "北京"}<|observation|>', NAMES, "observation")
    assert glued.content == "我先查一下。" and calls(glued) == [("get_weather", '{"city": "北京"}')]
    drawn = parse_completion("I will draw it.\ncogview\nA red cat on a mat", NAMES, "observation")
    assert drawn.content == "I will draw it." and calls(drawn) == [("cogview", "A red cat on a mat")]


def test_a_tool_name_followed_by_prose_is_text():
    for text in ("python\nPython is a programming language.", "cogview\nI cannot draw that, sorry.",
                 "get_weather\nThe weather tool needs a city."):
        turn = parse_completion(text, NAMES, "eos")
        assert turn.tool_calls == [] and turn.content == text
    # ...unless the model stopped to wait for the tool's answer
    assert calls(parse_completion("cogview\nA red cat", NAMES, "observation")) == [("cogview", "A red cat")]
    # code is code, whatever the stop reason
    assert calls(parse_completion("python\nimport math\nprint(math.pi)", NAMES, None)) == [
        ("python", "import math\nprint(math.pi)")]


def test_an_answer_that_shows_code_stays_an_answer():
    text = "\nYou can use python\n```python\nprint(1)\n```"
    assert parse_completion(text, NAMES, "eos").tool_calls == []
