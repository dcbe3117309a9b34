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
TOOLS_OUTRO = "</tools>\n\nFor each function call, output the function name and arguments within the following XML format:\n"

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# The tags GLM-4.5's tokenizer adds as single tokens (not special ones: servers keep them in the text)
ADDED_TOKENS = (THINK_OPEN, THINK_CLOSE, CALL_OPEN, CALL_CLOSE, "<tool_response>", "</tool_response>",
                "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", "/nothink")
_PAIR = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)(?:</arg_value>|\Z)", re.S)


class GLM45Format(ChatFormat):
    """GLM-4.5 and 4.6: XML calls, ``<think>`` reasoning, ``<tool_response>`` observations.

    Reasoning of turns before the last user message is dropped from the history, as these models'
    template does; ``thinking=False`` appends ``/nothink`` to user turns and opens the answer with an
    empty ``<think></think>``.
    """

    name = "glm45"
    label = "GLM-4.5+"
    stop_reasons = STOP_REASONS  # the same three stop tokens as GLM-4
    stop_token_ids = tuple(STOP_TOKEN_IDS)
    turn_start = "<|assistant|>"
    call_syntax = "xml"
    builtin_style = "tir"
    call_example = ("<tool_call>{function-name}\n<arg_key>{arg-key-1}</arg_key>\n<arg_value>{arg-value-1}</arg_value>\n"
                    "<arg_key>{arg-key-2}</arg_key>\n<arg_value>{arg-value-2}</arg_value>\n...\n</tool_call>")
    compact = False  # GLM-4.7 writes calls, results and turns without the newlines between their parts

    def __init__(self, thinking: bool = True):
        self.thinking = thinking

    def template_inputs(self, messages: list[Message], tools: list[ToolSpec] | None = None) -> dict[str, Any]:
        return {"conversation": template_messages(messages), "tools": [_tool_entry(spec) for spec in tools or []] or None,
                **({} if self.thinking else {"enable_thinking": False})}

    def configured(self, thinking: bool | None, preserved_thinking: bool | None = None) -> "GLM45Format":
        return self if thinking is None or thinking == self.thinking else GLM45Format(thinking=thinking)

    def render(self, messages: list[Message], tools: list[ToolSpec] | None = None,
               add_generation_prompt: bool = True) -> str:
        parts = [BOS]
        if tools:
            entries = "".join(json.dumps(_tool_entry(spec), ensure_ascii=False) + "\n" for spec in tools)
            parts.append(f"<|system|>\n{TOOLS_INTRO}{entries}{TOOLS_OUTRO}{self.call_example}")
        last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
        gap = "" if self.compact else "\n"
        for index, message in enumerate(messages):
            if message.role == "user":
                parts.append(f"<|user|>{gap}{message.content}{self._nothink(message.content)}")
            elif message.role == "assistant":
                parts.append("<|assistant|>" + self._reasoning(message.reasoning.strip(), kept=index > last_user))
                if message.content.strip():
                    parts.append(gap + message.content.strip())
                parts.extend(gap + render_call(call, compact=self.compact) for call in message.tool_calls)
            elif message.role == "observation":
                if index == 0 or messages[index - 1].role != "observation":
                    parts.append("<|observation|>")
                parts.append(f"{gap}<tool_response>{gap}{message.content}{gap}</tool_response>")
            else:
                parts.append(f"<|system|>{gap}{message.content}")
        if add_generation_prompt:
            parts.append("<|assistant|>" + self._answer_start())
        return "".join(parts)

    def _nothink(self, content: str) -> str:
        return "/nothink" if not self.thinking and not content.endswith("/nothink") else ""

    def _reasoning(self, reasoning: str, kept: bool) -> str:
        """An assistant turn's reasoning block: the reasoning of the current task, an empty one before."""
        return f"\n{THINK_OPEN}{reasoning if kept else ''}{THINK_CLOSE}"

    def _answer_start(self) -> str:
        return "" if self.thinking else f"\n{THINK_OPEN}{THINK_CLOSE}"

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


class GLM47Format(GLM45Format):
    """GLM-4.7 and 4.7-Flash: GLM-4.5's protocol written without newlines between the parts, a prompt
    that opens ``<think>`` for the model, and *preserved thinking*.

    With ``preserved_thinking`` (the default, recommended for multi-turn agent work) the reasoning of
    every earlier turn stays in the history (the template's ``clear_thinking: false``), so the model
    keeps its line of thought and each step's prompt extends the last one; without it, reasoning
    before the last user message is cleared to a bare ``</think>``. ``thinking=False`` opens the
    answer with ``</think>`` (this template has no ``/nothink``).
    """

    name = "glm47"
    label = "GLM-4.7"
    call_example = ("<tool_call>{function-name}<arg_key>{arg-key-1}</arg_key><arg_value>{arg-value-1}</arg_value>"
                    "<arg_key>{arg-key-2}</arg_key><arg_value>{arg-value-2}</arg_value>...</tool_call>")
    compact = True

    def __init__(self, thinking: bool = True, preserved_thinking: bool = True):
        super().__init__(thinking=thinking)
        self.preserved_thinking = preserved_thinking

    def template_inputs(self, messages: list[Message], tools: list[ToolSpec] | None = None) -> dict[str, Any]:
        return {**super().template_inputs(messages, tools),
                **({"clear_thinking": False} if self.preserved_thinking else {})}

    def configured(self, thinking: bool | None, preserved_thinking: bool | None = None) -> "GLM47Format":
        thinking = self.thinking if thinking is None else thinking
        preserved = self.preserved_thinking if preserved_thinking is None else preserved_thinking
        if (thinking, preserved) == (self.thinking, self.preserved_thinking):
            return self
        return GLM47Format(thinking=thinking, preserved_thinking=preserved)

    def _nothink(self, content: str) -> str:
        return ""

    def _reasoning(self, reasoning: str, kept: bool) -> str:
        if reasoning and (kept or self.preserved_thinking):
            return f"{THINK_OPEN}{reasoning}{THINK_CLOSE}"
        return THINK_CLOSE

    def _answer_start(self) -> str:
        return THINK_OPEN if self.thinking else THINK_CLOSE

    def parse(self, text: str, tool_names: Iterable[str], stop_reason: str | None = None) -> ParsedTurn:
        # The prompt opened <think>: what comes before </think> (or before the first call, when the
        # model never closed it) is reasoning, though the completion does not start with the tag.
        opened = self.thinking and not text.lstrip().startswith(THINK_OPEN)
        return parse_completion(THINK_OPEN + text if opened else text)


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


def render_call(call: ToolCall, *, compact: bool = False) -> str:
    """A call as GLM-4.5 writes it (``compact``: as GLM-4.7 does, without newlines); a call read from
    the model is written back exactly as it came."""
    if call.syntax == "xml":
        return f"{CALL_OPEN}{call.name}{call.body}{CALL_CLOSE}"
    gap = "" if compact else "\n"
    pairs = "".join(f"<arg_key>{key}</arg_key>{gap}<arg_value>{_value_text(value)}</arg_value>{gap}"
                    for key, value in _arguments(call).items())
    return f"{CALL_OPEN}{call.name}{gap}{pairs}{CALL_CLOSE}"


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
        if is_text(properties.get(key)):
            arguments[key] = value
            continue
        try:
            arguments[key] = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            arguments[key] = value
    return arguments


def is_text(schema: Any) -> bool:
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
        return bool(typed) and all(is_text(option) for option in typed)
    return False


GLM45 = GLM45Format()
GLM47 = GLM47Format()
