"""The GLM-4.5+ chat format (GLM-4.5, 4.6, 4.7 and their Flash models): XML tool calls and thinking.

Tools are listed as JSON inside ``<tools></tools>`` in the system turn. A call is
``<tool_call>NAME\\n<arg_key>K</arg_key>\\n<arg_value>V</arg_value>\\n…</tool_call>``; several may follow
each other in one turn, GLM-4.7 may run the name straight into the first ``<arg_key>`` and writes a
call without arguments as ``<tool_call>get_time</tool_call>``. Values are text: a value is decoded as
JSON only where the tool's schema says it is not a string (:func:`decode_arguments`, applied by the
registry, which knows the schema). Reasoning comes first, in ``<think>…</think>``; results come back
in an observation turn as ``<tool_response>…</tool_response>``.

A checkpoint of the GLM-4.5 family is read in this format by itself (:mod:`agent.protocol.formats`);
``--format glm45`` says so for a served model.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

from ..messages import Message, ToolCall, ToolSpec
from .format import ChatFormat, ParsedTurn
from .glm4 import BOS, STOP_REASONS, STOP_TOKEN_IDS, new_call_id, strip_stop_tokens

TOOLS_INTRO = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
)
TOOLS_OUTRO = (
    "</tools>\n\nFor each function call, output the function name and arguments within the following XML format:\n"
    "<tool_call>{function-name}\n<arg_key>{arg-key-1}</arg_key>\n<arg_value>{arg-value-1}</arg_value>\n"
    "<arg_key>{arg-key-2}</arg_key>\n<arg_value>{arg-value-2}</arg_value>\n...\n</tool_call>"
)

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# The tags GLM-4.5's tokenizer adds as single tokens (not special ones: servers keep them in the text)
ADDED_TOKENS = (THINK_OPEN, THINK_CLOSE, CALL_OPEN, CALL_CLOSE, "<tool_response>", "</tool_response>",
                "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", "/nothink")
_PAIR = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)(?:</arg_value>|\Z)", re.S)


class GLM45Format(ChatFormat):
    """GLM-4.5 and later: XML calls, ``<think>`` reasoning, ``<tool_response>`` observations."""

    name = "glm45"
    label = "GLM-4.5+"
    stop_reasons = STOP_REASONS  # the same three stop tokens as GLM-4
    stop_token_ids = tuple(STOP_TOKEN_IDS)
    turn_start = "<|assistant|>"
    call_syntax = "xml"
    builtin_style = "tir"

    def __init__(self, thinking: bool = True):
        self.thinking = thinking

    def template_inputs(self, messages: list[Message], tools: list[ToolSpec] | None = None) -> dict[str, Any]:
        return {"conversation": template_messages(messages), "tools": [_tool_entry(spec) for spec in tools or []] or None,
                **({} if self.thinking else {"enable_thinking": False})}

    def configured(self, thinking: bool | None) -> "GLM45Format":
        return self if thinking is None or thinking == self.thinking else GLM45Format(thinking=thinking)

    def render(self, messages: list[Message], tools: list[ToolSpec] | None = None,
               add_generation_prompt: bool = True) -> str:
        parts = [BOS]
        if tools:
            entries = "".join(json.dumps(_tool_entry(spec), ensure_ascii=False) + "\n" for spec in tools)
            parts.append(f"<|system|>\n{TOOLS_INTRO}{entries}{TOOLS_OUTRO}")
        last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
        for index, message in enumerate(messages):
            if message.role == "user":
                nothink = not self.thinking and not message.content.endswith("/nothink")
                parts.append(f"<|user|>\n{message.content}" + ("/nothink" if nothink else ""))
            elif message.role == "assistant":
                reasoning = message.reasoning.strip() if index > last_user else ""  # older reasoning is dropped
                parts.append(f"<|assistant|>\n{THINK_OPEN}{reasoning}{THINK_CLOSE}")
                if message.content.strip():
                    parts.append("\n" + message.content.strip())
                parts.extend("\n" + render_call(call) for call in message.tool_calls)
            elif message.role == "observation":
                if index == 0 or messages[index - 1].role != "observation":
                    parts.append("<|observation|>")
                parts.append(f"\n<tool_response>\n{message.content}\n</tool_response>")
            else:
                parts.append(f"<|system|>\n{message.content}")
        if add_generation_prompt:
            parts.append("<|assistant|>" + ("" if self.thinking else f"\n{THINK_OPEN}{THINK_CLOSE}"))
        return "".join(parts)

    def parse(self, text: str, tool_names: Iterable[str], stop_reason: str | None = None) -> ParsedTurn:
        return parse_completion(text)

    def call_body_start(self, segment: str) -> tuple[str, int] | None:
        start = segment.rfind(CALL_OPEN)
        if start < 0 or CALL_CLOSE in segment[start:]:
            return None
        head = segment[start + len(CALL_OPEN):]
        name_end = min((i for i in (head.find("\n"), head.find("<arg_key>")) if i >= 0), default=-1)
        if name_end < 0:
            return None
        return head[:name_end].strip(), start + len(CALL_OPEN) + name_end


def template_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """The conversation as GLM-4.5's chat template takes it: transformers' message dicts, calls with
    their arguments (typed), observations as ``tool`` messages, reasoning as ``reasoning_content``."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "observation":
            out.append({"role": "tool", "content": message.content})
        elif message.role == "assistant":
            calls = [{"type": "function", "function": {"name": call.name, "arguments": _arguments(call)}}
                     for call in message.tool_calls]
            out.append({"role": "assistant", "content": message.content, "reasoning_content": message.reasoning,
                        **({"tool_calls": calls} if calls else {})})
        else:
            out.append({"role": message.role, "content": message.content})
    return out


def _arguments(call: ToolCall) -> dict[str, Any]:
    if call.syntax == "xml":
        return dict(read_pairs(call.body))  # as written: the template writes strings back unchanged
    return call.arguments if call.arguments is not None else _json_object(call.body)


def _tool_entry(spec: ToolSpec) -> dict[str, Any]:
    return {"type": "function", "function": {"name": spec.name, "description": spec.description,
                                             "parameters": spec.parameters}}


def render_call(call: ToolCall) -> str:
    """A call as GLM-4.5 writes it; a call read from the model is written back exactly as it came."""
    if call.syntax == "xml":
        return f"{CALL_OPEN}{call.name}{call.body}{CALL_CLOSE}"
    arguments = _arguments(call)
    pairs = "".join(f"<arg_key>{key}</arg_key>\n<arg_value>{_value_text(value)}</arg_value>\n"
                    for key, value in arguments.items())
    return f"{CALL_OPEN}{call.name}\n{pairs}{CALL_CLOSE}"


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _json_object(body: str) -> dict[str, Any]:
    try:
        value = json.loads(body) if body.strip() else {}
    except (json.JSONDecodeError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def parse_completion(text: str) -> ParsedTurn:
    """Read what a GLM-4.5+ model generated after ``<|assistant|>``. Never raises, never drops a call.

    Reasoning is what comes before ``</think>`` (a ``<think>`` never closed runs up to the first
    call, or to the end). Each ``<tool_call>`` starts a call, closed or not (a call cut off by the
    stop token or the token budget is still a call: the registry says what is missing); text outside
    calls is the thought or the answer.
    """
    text, _ = strip_stop_tokens(text)
    reasoning, rest = _split_reasoning(text)
    texts: list[str] = []
    calls: list[ToolCall] = []
    pieces = rest.split(CALL_OPEN)
    texts.append(pieces[0])
    for piece in pieces[1:]:
        inner, closed, after = piece.partition(CALL_CLOSE)
        calls.append(_call(inner))
        if closed:
            texts.append(after)
    content = "\n".join(t.strip() for t in texts if t.strip())
    return ParsedTurn(content=content, tool_calls=calls, reasoning=reasoning)


def _split_reasoning(text: str) -> tuple[str, str]:
    if THINK_CLOSE in text:
        thought, _, rest = text.partition(THINK_CLOSE)
        return thought.split(THINK_OPEN, 1)[-1].strip(), rest
    opened = text.find(THINK_OPEN)
    if opened < 0:
        return "", text
    before, after = text[:opened], text[opened + len(THINK_OPEN):]
    call = after.find(CALL_OPEN)
    if call < 0:
        return after.strip(), before
    return after[:call].strip(), before + after[call:]


def _call(inner: str) -> ToolCall:
    """One call from the text between ``<tool_call>`` and ``</tool_call>``: the name ends at the first
    newline or ``<arg_key>`` (GLM-4.7 runs them together); the rest is the body, kept as written."""
    ends = [i for i in (inner.find("\n"), inner.find("<arg_key>")) if i >= 0]
    end = min(ends) if ends else len(inner)
    return ToolCall(id=new_call_id(), name=inner[:end].strip(), body=inner[end:], syntax="xml")


def read_pairs(body: str) -> list[tuple[str, str]]:
    """The ``(key, value)`` texts of a call's body, in order; a value cut off at the end runs to the end."""
    return [(key.strip(), value) for key, value in _PAIR.findall(body)]


def decode_arguments(body: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A call's arguments, typed by the tool's schema: a value whose declared type is not a string is
    read as JSON; a string stays exactly as written. A value that is not the JSON it should be stays
    text, for the schema check to name."""
    properties = schema.get("properties") or {}
    arguments: dict[str, Any] = {}
    for key, value in read_pairs(body):
        if _is_string(properties.get(key)):
            arguments[key] = value
            continue
        try:
            arguments[key] = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            arguments[key] = value
    return arguments


def _is_string(schema: Any) -> bool:
    """Whether a property's schema says its value is text (so it must not be read as JSON)."""
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    if kind == "string" or (isinstance(kind, list) and kind and all(k in ("string", "null") for k in kind)):
        return True
    if "enum" in schema:
        return all(isinstance(option, str) for option in schema["enum"])
    options = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(options, list):
        typed = [option for option in options if isinstance(option, dict) and option.get("type") != "null"]
        return bool(typed) and all(_is_string(option) for option in typed)
    return False


GLM45 = GLM45Format()
