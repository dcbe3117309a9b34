"""``OpenAIChatModel``: any chat-completions API with native tool calls (vLLM, SGLang, hosted APIs).

The server renders the prompt with its own chat template and parses tool calls with its own parser
(vLLM: ``--enable-auto-tool-choice --tool-call-parser NAME`` for models it has a parser for; for
glm-4-9b-chat, which it has none for, use :class:`CompletionsModel`); we send OpenAI JSON and read
``tool_calls`` back. A GLM-4 call that comes back as plain text (``name\nbody``) is still read as a call. Every tool, built-ins included, is offered with its JSON schema, so a chat model
calls ``python`` with ``{"code": "..."}``.

>>> model = OpenAIChatModel("http://localhost:8000/v1", "glm-4-9b-chat")

The server applies its own template, so the model's family matters here only for the names it knows the
built-in tools by: ``chat_format=GLM45`` (``--format glm45``) says the served model is GLM-4.5+, and
the browser is offered as ``browser.search``, ``browser.open`` and ``browser.find``.
"""

from __future__ import annotations

import json
import operator
import threading
from collections import OrderedDict
from typing import Any

from ..messages import Message, ToolCall, ToolSpec
from ..policy import ModelSettings
from ..protocol import glm4, glm45
from ..protocol.format import ChatFormat
from ._http import Serialized, ServedModel, encode_json, json_text, usage_from
from .base import ChatModel, ModelTurn, StopReason, TokenCallback


HISTORIES_KEPT = 64  # conversations a model keeps converted: more sessions than this at once convert anew


class OpenAIChatModel(ServedModel, ChatModel):
    """A chat API with native ``tools``/``tool_calls``; streams over SSE by default.

    Takes the arguments of :class:`~agent.models._http.ServedModel`: ``base_url``, ``model``,
    ``api_key``, ``stream``, ``timeout``, ``max_retries``, ``backoff``, ``extra_body``…, and
    ``chat_format``: the served model's family, for the names it knows the built-ins by (``None``: the
    All Tools names, ``simple_browser``).
    """

    def __init__(self, *args: Any, chat_format: ChatFormat | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.chat_format = chat_format
        # the conversations converted so far, by their first message (one each for concurrent sessions)
        self._histories: OrderedDict[int, ChatHistory] = OrderedDict()
        self._histories_lock = threading.Lock()  # a model may serve sessions on several threads

    @property
    def builtin_style(self) -> str:
        return self.chat_format.builtin_style if self.chat_format is not None else super().builtin_style

    async def generate(self, messages: list[Message], tools: list[ToolSpec], settings: ModelSettings,
                       on_token: TokenCallback | None = None) -> ModelTurn:
        body = self.request_json(messages, tools, settings)
        if self.stream:
            content, reasoning, raw_calls, finish, usage = await self._read_stream(body, on_token)
        else:
            data = await self._http.post("chat/completions", body)
            choice = (data.get("choices") or [{}])[0]
            message = choice.get("message") or {}
            content, raw_calls = message.get("content") or "", message.get("tool_calls") or []
            reasoning = message.get("reasoning_content") or ""  # vLLM/SGLang reasoning parsers put <think> here
            finish, usage = choice.get("finish_reason"), data.get("usage")
        calls = [tool_call(entry) for entry in raw_calls]
        if not calls:
            content, reasoning, calls = _calls_in_text(content, reasoning, tools, finish)
        return ModelTurn(content=content, tool_calls=calls, reasoning=reasoning, raw=content,
                         stop_reason=_stop_reason(finish, calls), usage=usage_from(usage))

    def request_json(self, messages: list[Message], tools: list[ToolSpec], settings: ModelSettings) -> bytes:
        """The JSON body of the request :meth:`generate` sends, as bytes.

        A conversation that grew since the last request is converted only where it is new (see
        :class:`ChatHistory`); the bytes are the same as converting it whole.
        """
        history = self._history(messages, tools)
        fields: dict[str, Any] = {"messages": Serialized(history.json())}
        if tools:  # an empty list is refused by some servers; no tools means no key
            fields["tools"] = Serialized(history.tools_json)
        return encode_json(self.request_body(settings, **fields))

    def _history(self, messages: list[Message], tools: list[ToolSpec]) -> ChatHistory:
        key = id(messages[0]) if messages else 0  # the history holds the message: its id stays its own
        with self._histories_lock:
            history = self._histories.pop(key, None)
            if history is None or not history.continues(messages, tools):
                history = ChatHistory(tools)
            history.extend(messages)
            self._histories[key] = history  # the most recent last; the least recent goes first
            if len(self._histories) > HISTORIES_KEPT:
                self._histories.popitem(last=False)
        return history

    async def _read_stream(self, body: bytes, on_token: TokenCallback | None
                           ) -> tuple[str, str, list[dict[str, Any]], str | None, dict[str, Any] | None]:
        """Accumulate ``delta.content`` (handing each piece to ``on_token``), ``delta.reasoning_content``
        and ``delta.tool_calls`` by index."""
        pieces: list[str] = []
        thinking: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        finish = usage = None
        async for event in self._http.stream("chat/completions", body):
            usage = event.get("usage") or usage
            for choice in event.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("reasoning_content"):
                    thinking.append(delta["reasoning_content"])
                if delta.get("content"):
                    pieces.append(delta["content"])
                    if on_token is not None:
                        on_token(delta["content"])
                for fragment in delta.get("tool_calls") or []:
                    _merge_fragment(calls.setdefault(_fragment_index(calls, fragment), {}), fragment)
                finish = choice.get("finish_reason") or finish
        raw_calls = [calls[index] for index in sorted(calls)]
        return "".join(pieces), "".join(thinking), raw_calls, finish, usage


def _fragment_index(calls: dict[int, dict[str, Any]], fragment: dict[str, Any]) -> int:
    """Which call a fragment continues: its ``index``; without one (some servers), a new id starts a new call."""
    if isinstance(fragment.get("index"), int):
        return fragment["index"]
    last = max(calls, default=-1)
    starts_new = last < 0 or (fragment.get("id") and calls[last].get("id") not in (None, fragment["id"]))
    return last + 1 if starts_new else last


def _merge_fragment(call: dict[str, Any], fragment: dict[str, Any]) -> None:
    """Fold one streamed ``tool_calls`` fragment into the call being built (arguments arrive in pieces)."""
    if fragment.get("id"):
        call["id"] = fragment["id"]
    function = call.setdefault("function", {"name": "", "arguments": ""})
    piece = fragment.get("function") or {}
    name = piece.get("name")
    if name and name != function["name"]:  # the name comes once, in pieces, or repeated whole
        function["name"] += name
    arguments = piece.get("arguments")
    if isinstance(arguments, str):
        function["arguments"] += arguments
    elif arguments is not None:
        function["arguments"] = arguments


# ---------------------------------------------------------------------------------------------------
# Our messages → chat API JSON


def chat_messages(messages: list[Message], tools: list[ToolSpec] | None = None) -> list[dict[str, Any]]:
    """The conversation as chat API messages.

    Assistant calls become ``tool_calls``; observations become ``tool`` messages answering them by
    ``tool_call_id`` (an observation without one answers the next unanswered call, in order). The
    GLM-4 parts of one observation (``mclick``: one quote a page) make one tool message, each part
    headed by its metadata so ``[N†source]`` stays citable.
    """
    history = ChatHistory(tools)
    history.extend(messages)
    return history.messages()


class ChatHistory:
    """A conversation as chat API messages (see :func:`chat_messages`), converted as it grows.

    Every step of a run sends the whole conversation again; converting and serializing all of it each
    time makes a step cost more the longer the run (5 ms a step at 320 steps). This keeps the messages
    converted so far, each with its JSON, and converts only those added since. It knows a conversation
    it has seen by its messages themselves (the same objects: a conversation grows by appending, and a
    ``Message`` is immutable); any other history is for a new :class:`ChatHistory`.
    """

    def __init__(self, tools: list[ToolSpec] | None = None):
        self.tools = list(tools or [])
        self.tools_json = json_text([chat_tool(spec) for spec in self.tools])
        self._schemas = {spec.name: spec.parameters for spec in self.tools}
        self._seen: list[Message] = []  # the messages converted so far
        self._done: list[dict[str, Any]] = []
        self._done_json: list[str] = []  # each of _done as JSON
        self._unanswered: list[str] = []
        # observation parts answering one call, not yet joined into a tool message: more may follow
        self._parts: list[Message] = []
        self._parts_id = ""

    def continues(self, messages: list[Message], tools: list[ToolSpec] | None = None) -> bool:
        """Whether ``messages`` are the ones converted so far, perhaps with more after them, for the same tools."""
        seen = self._seen
        return (len(messages) >= len(seen) and all(map(operator.is_, messages[:len(seen)], seen))
                and list(tools or []) == self.tools)

    def extend(self, messages: list[Message]) -> None:
        """Convert the messages after those converted so far (see :meth:`continues`)."""
        for message in messages[len(self._seen):]:
            self._seen.append(message)
            self._convert(message)

    def messages(self) -> list[dict[str, Any]]:
        return self._done + ([self._joined_parts()] if self._parts else [])

    def json(self) -> str:
        """:meth:`messages` as JSON, as ``json.dumps`` writes it compact."""
        pending = [json_text(self._joined_parts())] if self._parts else []
        return f"[{','.join(self._done_json + pending)}]"

    def _convert(self, message: Message) -> None:
        if message.role == "observation":
            call_id = message.tool_call_id or (self._unanswered[0] if self._unanswered else "")
            if self._parts and self._parts_id != call_id:
                self._flush()
            if call_id in self._unanswered:
                self._unanswered.remove(call_id)
            self._parts.append(message)
            self._parts_id = call_id
            return
        self._flush()
        # reasoning goes back only to the servers that sent it (their templates keep or clear it)
        reasoning = {"reasoning_content": message.reasoning} if message.reasoning else {}
        if message.role == "assistant" and message.tool_calls:
            self._add({"role": "assistant", "content": message.content or None, **reasoning,
                       "tool_calls": [chat_tool_call(call, self._schemas.get(call.name))
                                      for call in message.tool_calls]})
            self._unanswered = [call.id for call in message.tool_calls]
        elif message.role == "system" and not message.content:
            return  # the GLM-4 tools carrier; chat APIs take tools separately
        else:
            self._add({"role": message.role, "content": message.content, **reasoning})

    def _add(self, entry: dict[str, Any]) -> None:
        self._done.append(entry)
        self._done_json.append(json_text(entry))

    def _flush(self) -> None:
        if self._parts:
            self._add(self._joined_parts())
            self._parts = []

    def _joined_parts(self) -> dict[str, Any]:
        parts = self._parts
        texts = [f"{p.metadata}\n{p.content}" if p.metadata and len(parts) > 1 else p.content for p in parts]
        return {"role": "tool", "tool_call_id": self._parts_id, "content": "\n\n".join(texts)}


def chat_tool_call(call: ToolCall, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """One call as the chat API echoes it: JSON arguments (a GLM-4.5+ XML call read from the text typed
    by the tool's ``schema``), or a GLM-4 body (raw code) as it was written."""
    if call.arguments is not None:
        arguments = json.dumps(call.arguments, ensure_ascii=False)
    elif call.syntax == "xml":
        arguments = json.dumps(glm45.decode_arguments(call.body, schema or {}), ensure_ascii=False)
    else:
        arguments = call.body or "{}"
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}}


def chat_tool(spec: ToolSpec) -> dict[str, Any]:
    return {"type": "function",
            "function": {"name": spec.name, "description": spec.description, "parameters": spec.parameters}}


# ---------------------------------------------------------------------------------------------------
# Chat API JSON → our turn


def tool_call(entry: dict[str, Any]) -> ToolCall:
    """A ``tool_calls`` entry as a :class:`ToolCall`.

    ``arguments`` is ``None`` when the model wrote invalid JSON; the registry then reads ``body``
    tolerantly and, failing that, tells the model what it expected.
    """
    function = entry.get("function") or {}
    raw = function.get("arguments")
    arguments: dict[str, Any] | None
    if isinstance(raw, dict):  # some servers send an object, not a JSON string
        body, arguments = json.dumps(raw, ensure_ascii=False), raw
    else:
        body = raw or ""
        try:
            parsed: Any = json.loads(body)
        except (json.JSONDecodeError, RecursionError):  # the registry says what is wrong with it
            parsed = None
        arguments = parsed if isinstance(parsed, dict) else None
    return ToolCall(id=entry.get("id") or glm4.new_call_id(), name=function.get("name") or "", body=body,
                    arguments=arguments, syntax="json")


def _calls_in_text(content: str, reasoning: str, tools: list[ToolSpec], finish: str | None
                   ) -> tuple[str, str, list[ToolCall]]:
    """Calls and reasoning a server left in the text: content, reasoning and calls.

    GLM-4.5+ XML (``<tool_call>``, ``</think>``) is there when the server runs no tool or reasoning
    parser, or when its parser missed a call (vLLM's streaming ones do): it is read as the model wrote
    it. GLM-4 calls (``name\\nbody``) are there from a server without a parser for GLM-4; as a chat
    server's ``stop`` does not say whether the model stopped for an observation, a tool's name counts
    only when arguments follow it, and a name followed by prose stays an answer.
    """
    if glm45.CALL_OPEN in content or glm45.THINK_CLOSE in content:
        parsed = glm45.parse_completion(content)
        return parsed.content, "\n".join(text for text in (reasoning, parsed.reasoning) if text), parsed.tool_calls
    if finish == "length":
        return content, reasoning, []
    glm4_turn = glm4.parse_completion(content, [spec.name for spec in tools], None)
    return (glm4_turn.content, reasoning, glm4_turn.tool_calls) if glm4_turn.tool_calls else (content, reasoning, [])


def _stop_reason(finish: str | None, calls: list[ToolCall]) -> StopReason | None:
    if calls:
        return "tool_calls"
    if finish == "length":
        return "length"
    return "eos" if finish else None
