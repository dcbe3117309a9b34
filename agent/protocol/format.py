"""The seam between the loop's typed conversation and a model family's raw text: a chat format.

A format renders messages and tool schemas into the prompt a model was trained on, reads a
completion back into thought, calls and answer, names the tokens that end a turn, and says where a
call's body starts (so constrained decoding knows when it is inside one). The raw-prompt backends
(local transformers, a served completions API) take a format; GLM-4 is one
(:data:`agent.protocol.glm4.GLM4`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..messages import Message, ToolCall, ToolSpec


@dataclass
class ParsedTurn:
    """A completion split into text (a thought before calls, or the answer) and calls."""

    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    reasoning: str = ""  # what a thinking model wrote in <think> before it

    @property
    def answer(self) -> str | None:
        return None if self.tool_calls else self.content.strip()


class ChatFormat(abc.ABC):
    """How one model family writes a conversation. Subclass it for a new family."""

    name: str = ""
    label: str = ""  # the family's name for people, in errors ("GLM-4")
    # The strings that end the model's turn, and why generation stopped on each ("observation": a call).
    stop_reasons: dict[str, str] = {}
    # Their ids in the family's tokenizer, for servers that stop on ids (vLLM's stop_token_ids).
    stop_token_ids: tuple[int, ...] = ()
    # The special token that opens an assistant segment; a call's name follows it.
    turn_start: str = ""
    # How a call's body is written: "json" (GLM-4: the name's line, then JSON or a built-in's text, ended
    # by <|observation|>) or "xml" (GLM-4.5+: <arg_key>/<arg_value> pairs closed by </tool_call>).
    call_syntax: str = "json"
    # The built-in tools' names the family was trained with: "all_tools" (GLM-4 All Tools: python,
    # simple_browser, cogview) or "tir" (GLM-4.6's tool-integrated reasoning: python, browser.search,
    # browser.open, browser.find).
    builtin_style: str = "all_tools"

    @property
    def stop_tokens(self) -> tuple[str, ...]:
        return tuple(self.stop_reasons)

    @abc.abstractmethod
    def render(self, messages: list[Message], tools: list[ToolSpec] | None = None,
               add_generation_prompt: bool = True) -> str:
        """The exact prompt for a conversation (a prefix of the next step's, so KV caches can be reused)."""

    @abc.abstractmethod
    def parse(self, text: str, tool_names: Iterable[str], stop_reason: str | None = None) -> ParsedTurn:
        """Read a completion. Never raises: what cannot be read is text, or a call the registry will refuse."""

    def template_inputs(self, messages: list[Message], tools: list[ToolSpec] | None = None) -> dict[str, Any]:
        """The same conversation as a checkpoint's own chat template takes it (``apply_chat_template``'s
        arguments), so the two renderings can be compared. Empty: this format has no such template."""
        return {}

    def configured(self, thinking: bool | None, preserved_thinking: bool | None = None) -> "ChatFormat":
        """This format with the policy's ``[model] thinking`` and ``preserved_thinking`` applied (unset:
        as it is). Formats without thinking ignore them."""
        return self

    def implied_stop(self, text: str, tool_names: Iterable[str]) -> str:
        """The stop a completion written by hand implies (a :class:`~agent.models.ScriptedModel`'s script):
        the stop token it ends with, else ``"observation"`` when it holds a call, else ``"user"``."""
        for token, reason in self.stop_reasons.items():
            if text.endswith(token):
                return reason
        return "observation" if self.parse(text, tool_names).tool_calls else "user"

    @abc.abstractmethod
    def call_body_start(self, segment: str) -> tuple[str, int] | None:
        """In the text of the current assistant segment (after ``turn_start``), the tool being called and
        where its body starts; ``None`` while no call has begun (or the segment is text)."""
