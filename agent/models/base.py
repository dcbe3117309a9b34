"""The one protocol every model backend speaks, and the shared core of the GLM-4-format backends."""

from __future__ import annotations

import abc
from typing import Callable, Literal

from pydantic import BaseModel, Field

from ..messages import Message, ToolCall, ToolSpec
from ..policy import ModelSettings
from ..protocol.format import ChatFormat
from ..protocol.glm4 import GLM4

TokenCallback = Callable[[str], None]
StopReason = Literal["observation", "user", "eos", "length", "tool_calls"]


class Usage(BaseModel):
    """Token counts. ``prefilled_tokens`` were computed this step; ``reused_tokens`` came from a KV cache."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    prefilled_tokens: int = 0
    reused_tokens: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(**{name: getattr(self, name) + getattr(other, name) for name in Usage.model_fields})


class ModelTurn(BaseModel):
    """What the model said in one step: text (a thought, or the final answer) and tool calls."""

    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    reasoning: str = ""  # a thinking model's reasoning (GLM-4.5+ <think>), kept in history as the format says
    raw: str = ""  # the completion as generated, for transcripts and replay
    stop_reason: StopReason | None = None
    usage: Usage = Field(default_factory=Usage)

    @property
    def answer(self) -> str | None:
        return None if self.tool_calls else self.content.strip()

    def as_message(self) -> Message:
        return Message(role="assistant", content=self.content, reasoning=self.reasoning, tool_calls=self.tool_calls)


class ChatModel(abc.ABC):
    """A chat model backend. Knows tool schemas, nothing else about tools."""

    @abc.abstractmethod
    async def generate(self, messages: list[Message], tools: list[ToolSpec], settings: ModelSettings,
                       on_token: TokenCallback | None = None) -> ModelTurn:
        """One assistant turn for the conversation so far."""

    async def aclose(self) -> None:
        """Release connections, caches or weights."""

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def builtin_style(self) -> str:
        """The names this model knows the built-in tools by (it decides what :meth:`Tool.variants
        <agent.tool.Tool.variants>` the agent shows it): ``"all_tools"`` (GLM-4 All Tools:
        ``simple_browser``), the default, or ``"tir"`` (GLM-4.5+: ``browser.search``, ``browser.open``,
        ``browser.find``)."""
        return "all_tools"


class Completion(BaseModel):
    text: str
    stop_reason: StopReason | None = None
    usage: Usage = Field(default_factory=Usage)


class RawPromptModel(ChatModel):
    """A backend that continues raw text: the prompt is rendered and the completion read here, by its
    :class:`~agent.protocol.format.ChatFormat` (GLM-4's unless given another)."""

    chat_format: ChatFormat = GLM4

    @property
    def builtin_style(self) -> str:
        return self.chat_format.builtin_style

    @abc.abstractmethod
    async def complete(self, prompt: str, settings: ModelSettings, on_token: TokenCallback | None = None,
                       *, tools: list[ToolSpec] | None = None) -> Completion:
        """Continue the rendered prompt until one of the format's stop tokens (``tools``: for constrained decoding)."""

    async def generate(self, messages: list[Message], tools: list[ToolSpec], settings: ModelSettings,
                       on_token: TokenCallback | None = None) -> ModelTurn:
        chat_format = self.chat_format.configured(settings.thinking, settings.preserved_thinking)
        prompt = chat_format.render(messages, tools)
        completion = await self.complete(prompt, settings, on_token, tools=tools)
        return turn_from_completion(completion, tools, chat_format)


GLM4Model = RawPromptModel  # its name before there was a second format


def turn_from_completion(completion: Completion, tools: list[ToolSpec], chat_format: ChatFormat = GLM4) -> ModelTurn:
    parsed = chat_format.parse(completion.text, [t.name for t in tools], completion.stop_reason)
    return ModelTurn(content=parsed.content, tool_calls=parsed.tool_calls, reasoning=parsed.reasoning, raw=completion.text,
                     stop_reason=completion.stop_reason, usage=completion.usage)
