"""The conversation: messages, tool calls, observations, artifacts and citations.

These are the typed values that cross every boundary: the loop builds messages, backends render them
(GLM-4 prompt or chat API JSON), tools return observations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant", "observation"]


class ToolCall(BaseModel):
    """One call the model asked for.

    ``body`` is the call exactly as the model wrote it. With ``syntax="glm4"`` it is what GLM-4 sends
    (raw code for ``python``, call syntax for ``simple_browser``, JSON for functions); with
    ``syntax="json"`` (chat APIs' native tool calls) it is always a JSON object. ``arguments`` is set
    when the backend already parsed them.
    """

    id: str
    name: str
    body: str = ""
    arguments: dict[str, Any] | None = None
    syntax: Literal["glm4", "json", "xml"] = "glm4"  # xml: GLM-4.5+ <arg_key>/<arg_value> pairs


class Citation(BaseModel):
    id: str
    url: str
    title: str = ""


class Artifact(BaseModel):
    """A file a tool produced (an image, a plot), saved under the run's directory."""

    path: Path
    kind: str = "image"
    tool: str = ""
    description: str = ""


class ObservationPart(BaseModel):
    """One GLM-4 observation turn, when a call answers with several (``mclick``: one quote a page)."""

    metadata: str = ""
    content: str


class Observation(BaseModel):
    """What a tool call returns to the model.

    ``parts``, when set, are rendered as one GLM-4 observation turn each; ``content`` then holds them
    joined, for chat APIs that take one tool message per call.
    """

    call_id: str
    tool: str
    content: str
    metadata: str = ""  # GLM-4 observation metadata: browser_result, quote_result [N†source], cogview_result
    is_error: bool = False
    artifacts: list[Artifact] = Field(default_factory=list)
    citations: list[Citation] = Field(default_factory=list)
    parts: list[ObservationPart] = Field(default_factory=list)


class Message(BaseModel):
    """One turn of the conversation.

    An assistant message carries text (a thought before calls, or the final answer) and the calls it
    made; an observation message answers one call (``tool_call_id``) and carries GLM-4 ``metadata``.
    Messages are immutable (change one with ``model_copy(update=...)``): backends that keep a
    conversation converted as it grows know it by its messages.
    """

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str = ""
    reasoning: str = ""  # a thinking model's reasoning before this assistant turn (GLM-4.5+ <think>)
    metadata: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None  # the tool an observation comes from


class ToolSpec(BaseModel):
    """What a backend knows of a tool: its schema, nothing more."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    builtin: str | None = None  # GLM-4's native type (python, simple_browser, cogview), described by ``prompt``
    prompt: str = ""
