"""The GLM-4 chat format: render a conversation into the exact prompt, read a completion back.

The ground truth is the official chat template of glm-4-9b-chat, rendered as transformers renders
chat templates (``trim_blocks`` and ``lstrip_blocks``); tests compare our output with it byte for byte.
Rendering here in plain Python keeps the prompt identical for every backend (local, served) and lets
the local backend reuse its KV cache, since an older conversation's prompt is a prefix of a newer one's.

Turn format: ``<|role|>{metadata}\\n{content}``. A tool call is an assistant turn whose metadata is the
tool's name; a final answer has empty metadata; observations are role ``observation``.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
import warnings
from dataclasses import dataclass
from typing import Any, Iterable

from ..messages import Message, ToolCall, ToolSpec
from .format import ChatFormat, ParsedTurn
from .near_json import closing_bracket, fence_end

BOS = "[gMASK]<sop>"
STOP_TOKENS = ("<|endoftext|>", "<|user|>", "<|observation|>")
STOP_TOKEN_IDS = [151329, 151336, 151338]  # their ids in GLM-4-9B's tokenizer
# Why generation stopped, by stop token: <|observation|> means the model made a tool call.
STOP_REASONS = {"<|endoftext|>": "eos", "<|user|>": "user", "<|observation|>": "observation"}
SPECIAL_TOKENS = ("[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>", "<|assistant|>",
                  "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>", "<|endoftext|>")

SYSTEM_INTRO = (
    "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，"
    "你的任务是针对用户的问题和要求提供适当的答复和支持。"
)

def tool_entries(tools: Iterable[ToolSpec]) -> list[dict[str, Any]]:
    """Tools as the template expects them in the system message."""
    entries: list[dict[str, Any]] = []
    for spec in tools:
        if spec.builtin:
            entries.append({"type": spec.builtin})
        else:
            entries.append({"type": "function", "function": {
                "name": spec.name, "description": spec.description, "parameters": spec.parameters}})
    return entries


def template_messages(messages: list[Message], tools: list[ToolSpec] | None = None) -> list[dict[str, Any]]:
    """The conversation as the official template's ``messages`` argument.

    Tools ride on the first system message (one is added when there is none); an assistant message
    becomes a text turn (its thought or answer) followed by one turn per tool call.
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "assistant":
            if message.content:
                out.append({"role": "assistant", "metadata": "", "content": message.content})
            for call in message.tool_calls:
                out.append({"role": "assistant", "metadata": call.name, "content": call_body(call)})
        else:
            out.append({"role": message.role, "metadata": message.metadata, "content": message.content})
    if tools:
        if not out or out[0]["role"] != "system":
            out.insert(0, {"role": "system", "metadata": "", "content": ""})
        out[0]["tools"] = tool_entries(tools)
    return out


def call_body(call: ToolCall) -> str:
    if call.body.strip():
        return call.body
    if call.arguments is not None:
        return json.dumps(call.arguments, ensure_ascii=False)
    return "{}"  # the template drops empty turns, which would hide the call from the model


def render_prompt(messages: list[Message], tools: list[ToolSpec] | None = None,
                  add_generation_prompt: bool = True) -> str:
    """The exact GLM-4 prompt for a conversation; equals the official template's rendering."""
    parts = [BOS]
    for item in template_messages(messages, tools):
        if "tools" in item:
            parts.append(f"<|system|>\n{SYSTEM_INTRO}\n\n# 可用工具")
            parts.extend(_tool_text(spec) for spec in tools or ())
        if item["content"]:
            parts.append(f"<|{item['role']}|>{item['metadata']}\n{item['content']}")
    if add_generation_prompt:
        parts.append("<|assistant|>")
    return "".join(parts)


def _tool_text(spec: ToolSpec) -> str:
    if spec.builtin:  # a tool GLM-4 knows natively describes itself (the official template's own words)
        return f"\n## {spec.builtin}\n\n{spec.prompt}"
    function = {"name": spec.name, "description": spec.description, "parameters": spec.parameters}
    schema = json.dumps(function, ensure_ascii=False, indent=4)
    return f"\n## {spec.name}\n\n{schema}\n在调用上述函数时，请使用 Json 格式表示调用的参数。"


# ---------------------------------------------------------------------------------------------------
# Reading completions


_IDENTIFIER = re.compile(r"[A-Za-z_][\w\-.]{0,63}")
_CALL_SYNTAX = re.compile(r"[A-Za-z_][\w.]*\s*\(")  # search("x"), print(1)


def parse_completion(text: str, tool_names: Iterable[str], stop_reason: str | None = None) -> ParsedTurn:
    """Read what GLM-4 generated after ``<|assistant|>``. Never raises.

    ``stop_reason`` is ``"observation"`` when generation stopped on ``<|observation|>`` (a call),
    ``"user"``/``"eos"``/``"length"`` otherwise, ``None`` when unknown.

    - A turn whose first line names a tool is a call when the model stopped for an observation or
      the rest looks like arguments (JSON, a code fence, code, ``search(...)``); a tool name followed
      by prose is text, as GLM-4's own server reads it.
    - Several calls are all recovered, separated by ``<|assistant|>`` or not (servers that strip
      special tokens glue them together: ``{...}get_time\\n{...}``).
    - Text before a call is kept as the thought when the model stopped for an observation, even
      without the ``<|assistant|>`` between them.
    - A first line that looks like a name makes a call to an unknown tool when the model stopped for
      an observation (the registry then says which tools exist); anything else is text.

    >>> [c.name for c in parse_completion('a\\n{"x": 1}\\nb\\n{}', ["a", "b"], "observation").tool_calls]
    ['a', 'b']
    """
    names = set(tool_names)
    observation = stop_reason == "observation"
    text, _ = strip_stop_tokens(text)
    segments = text.split("<|assistant|>")
    texts: list[str] = []
    calls: list[ToolCall] = []
    for index, segment in enumerate(segments):
        metadata, newline, body = segment.partition("\n")
        name = metadata.strip()
        if newline and name in names and (observation or _looks_like_arguments(body)):
            calls.extend(_calls_from(name, body, names, observation))
            continue
        prose = body if not name else segment  # an answer may lack GLM-4's leading newline
        start = _next_call(prose, names, observation) if observation else None
        if start is not None:
            thought = prose[: start.line].rstrip()
            if thought:
                texts.append(thought)
            calls.extend(_calls_from(start.name, prose[start.body:], names, observation))
        elif name and newline and _IDENTIFIER.fullmatch(name) and observation and index == len(segments) - 1:
            calls.append(ToolCall(id=new_call_id(), name=name, body=body))
        elif prose:
            texts.append(prose)
    return ParsedTurn(content="\n".join(texts), tool_calls=calls)


def strip_stop_tokens(text: str) -> tuple[str, str | None]:
    """``text`` without the stop tokens it ends with (a server may leave them in), and why the first of
    them stopped generation (``None``: it ends with none)."""
    reason = None
    for token in STOP_TOKENS:
        if text.endswith(token):
            text, reason = text[: -len(token)], reason or STOP_REASONS[token]
    return text, reason


def implied_stop(text: str, tool_names: Iterable[str]) -> str:
    """The stop a GLM-4 completion written by hand implies: the stop token it ends with, else
    ``"observation"`` when its last turn starts with a tool's name (``name\\nbody``), else ``"user"``."""
    _, reason = strip_stop_tokens(text)
    if reason is not None:
        return reason
    name, newline, _ = text.rsplit("<|assistant|>", 1)[-1].partition("\n")
    return "observation" if newline and name.strip() in set(tool_names) else "user"


@dataclass
class _CallStart:
    name: str
    line: int  # where the line naming the tool begins (its text may be glued to what came before)
    body: int  # where the call's body begins


def _calls_from(name: str, body: str, names: set[str], observation: bool) -> list[ToolCall]:
    """The call to ``name`` whose body starts ``body``, and the calls that follow it in the same text."""
    calls = []
    while True:
        end, start = _body_end(body, names, observation)
        calls.append(ToolCall(id=new_call_id(), name=name, body=body[:end].rstrip() if start else body))
        if start is None:
            return calls
        name, body = start.name, body[start.body:]


def _body_end(body: str, names: set[str], observation: bool) -> tuple[int, _CallStart | None]:
    """Where a call's body ends and the next call starts, or ``(len(body), None)``.

    A JSON object or a code fence ends where it closes; a body of free text (code, a browser call)
    ends at a line naming a tool and followed by arguments.
    """
    lead = len(body) - len(body.lstrip())
    opener = body[lead:lead + 1]
    end = None
    if opener in ("{", "["):
        close = closing_bracket(body, lead)
        end = None if close is None else close + 1
    elif body.startswith("```", lead):
        end = fence_end(body)
    if end is None:
        start = _next_call(body, names, observation, first_line=1)
        return (len(body), None) if start is None else (start.line, start)
    start = _next_call(body, names, observation, offset=end)
    return (len(body), None) if start is None else (end, start)


def _next_call(text: str, names: set[str], observation: bool, *, offset: int = 0,
               first_line: int = 0) -> _CallStart | None:
    """The first line of ``text`` (from ``offset``, skipping ``first_line`` lines) that starts a call.

    A line that is exactly a tool name starts one when arguments follow it, or when the model stopped
    for an observation. A name glued to the end of a line after punctuation (``{...}get_time``, what
    is left when a server strips ``<|assistant|>``) starts one only when arguments follow it.
    """
    position = offset
    for index, line in enumerate(text[offset:].split("\n")):
        line_end = position + len(line)
        if index >= first_line and line_end < len(text):
            rest = text[line_end + 1:]
            stripped = line.strip()
            if stripped in names and (observation or _looks_like_arguments(rest)):
                return _CallStart(stripped, position, line_end + 1)
            glued = _glued_name(line.rstrip(), names)
            if glued and _looks_like_arguments(rest):
                return _CallStart(glued, line_end - len(glued), line_end + 1)
        position = line_end + 1
    return None


def _glued_name(line: str, names: set[str]) -> str | None:
    """The tool name that ends ``line`` right after punctuation (not a letter, digit or blank)."""
    for name in sorted(names, key=len, reverse=True):
        if len(line) > len(name) and line.endswith(name):
            before = line[-len(name) - 1]
            if not (before.isalnum() or before in "_ \t"):
                return name
    return None


def _looks_like_arguments(body: str) -> bool:
    """Whether text after a tool's name reads as its arguments rather than prose.

    JSON, a code fence, a call such as ``search("x")``, or Python that compiles (and is more than
    one bare word, which prose can be too).
    """
    text = body.strip()
    if not text:
        return False
    if text[0] in "{[" or text.startswith("```") or _CALL_SYNTAX.match(text):
        return True
    if re.fullmatch(r"\w+", text):
        return False
    try:
        with warnings.catch_warnings():  # "invalid escape sequence" and the like would reach the terminal
            warnings.simplefilter("ignore")
            compile(text, "<call>", "exec", dont_inherit=True)
    except Exception:  # SyntaxError, ValueError (NUL bytes), RecursionError, MemoryError: not code
        return False
    return True


_CALL_IDS = itertools.count(1)
_CALL_PREFIX = uuid.uuid4().hex[:6]  # ids stay unique across processes whose transcripts meet


def new_call_id() -> str:
    return f"call_{_CALL_PREFIX}{next(_CALL_IDS)}"


class GLM4Format(ChatFormat):
    """glm-4-9b-chat's format (GLM-4-0414 shares it): :func:`render_prompt` and :func:`parse_completion`."""

    name = "glm4"
    label = "GLM-4"
    stop_reasons = STOP_REASONS
    stop_token_ids = tuple(STOP_TOKEN_IDS)
    turn_start = "<|assistant|>"

    def render(self, messages: list[Message], tools: list[ToolSpec] | None = None,
               add_generation_prompt: bool = True) -> str:
        return render_prompt(messages, tools, add_generation_prompt)

    def parse(self, text: str, tool_names: Iterable[str], stop_reason: str | None = None) -> ParsedTurn:
        return parse_completion(text, tool_names, stop_reason)

    def template_inputs(self, messages: list[Message], tools: list[ToolSpec] | None = None) -> dict[str, Any]:
        return {"conversation": template_messages(messages, tools)}

    def implied_stop(self, text: str, tool_names: Iterable[str]) -> str:
        return implied_stop(text, tool_names)

    def call_body_start(self, segment: str) -> tuple[str, int] | None:
        name, newline, _ = segment.partition("\n")  # "name\n{body}"; an answer starts with "\n"
        return (name.strip(), len(name) + 1) if newline and name.strip() else None


GLM4 = GLM4Format()
