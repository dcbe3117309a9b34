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
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..messages import Message, ToolCall, ToolSpec
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

# The tool descriptions of the official template, as it renders them (trim_blocks eats one newline).
BUILTIN_TOOL_TEXT = {
    "python": (
        "\n## python\n\n"
        "当你向 `python` 发送包含 Python 代码的消息时，该代码将会在一个有状态的 Jupyter notebook 环境中执行。\n"
        "`python` 返回代码执行的输出，或在执行 60 秒后返回超时。\n"
        "`/mnt/data` 将会持久化存储你的文件。在此会话中，`python` 无法访问互联网。"
        "不要使用 `python` 进行任何网络请求或者在线 API 调用，这些在线内容的访问将不会成功。"
    ),
    "simple_browser": (
        "\n## simple_browser\n\n"
        "你可以使用 `simple_browser` 工具。该工具支持以下函数：\n"
        "`search(query: str, recency_days: int)`：使用搜索引擎进行查询并显示结果，可以使用 `recency_days` 参数控制搜索内容的时效性。\n"
        "`mclick(ids: list[int])`：获取一系列指定 id 的页面内容。每次调用时，须选择3-10个页面。"
        "选择多个角度的页面，同时尽可能选择可信任的信息来源。考虑到部分页面是无法加载的，"
        "你也可以多打开一些可能有用的页面而不用担心内容过多。\n"
        "`open_url(url: str)`：打开指定的 URL。\n\n"
        "使用 `【{引用 id}†{引用文本}】` 来引用内容。\n\n"
        "操作步骤：1. 使用 `search` 来获得信息列表; 2. 使用 `mclick` 来获取指定 ID 页面的内容; "
        "3. 根据获得的内容进行回复。在回复中应当引用信息来源。\n"
        " 如果用户提供了 URL，也可以用 `open_url` 直接打开页面。\n"
        "如果初次搜索结果没有找到合适的信息，也可以再次使用 `search` 进行搜索。"
    ),
    "cogview": (
        "\n## cogview\n\n"
        "如果用户的请求中包含了对图像的描述，你可以使用 `cogview` 来生成图像并展示给用户。"
        "你需要向 `cogview` 发送图像描述，规则：\n"
        "- 发送给 `cogview` 的消息必须使用英语。用户的中文描述必须完全翻译为英语。\n"
        "- 应当尽可能详细地描述图像生成的需求，需求描述约 100 英文单词。\n"
        "- 保持用户原始描述的意图。不要虚构内容或者没见过的人物。\n"
        "- 如无特殊说明，所在地为中国，持有中国立场并遵循中国社会主义价值观。"
    ),
}


def tool_entries(tools: Iterable[ToolSpec]) -> list[dict[str, Any]]:
    """Tools as the template expects them in the system message."""
    entries = []
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
            for entry in item["tools"]:
                parts.append(_tool_text(entry))
        if item["content"]:
            parts.append(f"<|{item['role']}|>{item['metadata']}\n{item['content']}")
    if add_generation_prompt:
        parts.append("<|assistant|>")
    return "".join(parts)


def _tool_text(entry: dict[str, Any]) -> str:
    if entry["type"] == "function":
        function = entry["function"]
        schema = json.dumps(function, ensure_ascii=False, indent=4)
        return f"\n## {function['name']}\n\n{schema}\n在调用上述函数时，请使用 Json 格式表示调用的参数。"
    return BUILTIN_TOOL_TEXT.get(entry["type"], "")


# ---------------------------------------------------------------------------------------------------
# Reading completions


@dataclass
class ParsedTurn:
    """A completion split into text (a thought before calls, or the answer) and calls."""

    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)

    @property
    def answer(self) -> str | None:
        return None if self.tool_calls else self.content.strip()


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
    for token in STOP_TOKENS:
        if text.endswith(token):
            text = text[: -len(token)]
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


def implied_stop(text: str, tool_names: Iterable[str]) -> str:
    """The stop a GLM-4 completion written by hand implies: the stop token it ends with, else
    ``"observation"`` when its last turn starts with a tool's name (``name\\nbody``), else ``"user"``."""
    for token in STOP_TOKENS:
        if text.endswith(token):
            return STOP_REASONS[token]
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
