"""Everything a run emits, as typed events. The CLI, ``--json``, transcripts and apps read the same stream."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field, TypeAdapter

from .messages import Artifact, Citation, Observation, ToolCall
from .models.base import ModelTurn, Usage

RunStatus = Literal["answered", "budget_exhausted", "error", "interrupted"]


class Step(BaseModel):
    """One model turn and the tool calls it made."""

    index: int
    thought: str = ""
    reasoning: str = ""  # a thinking model's <think> text (GLM-4.5+)
    tool_calls: list[ToolCall] = Field(default_factory=list)
    observations: list[Observation] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    model_s: float = 0.0
    tools_s: float = 0.0


class Timings(BaseModel):
    total_s: float = 0.0
    model_s: float = 0.0
    tools_s: float = 0.0


class RunResult(BaseModel):
    """The outcome of a run. ``status`` is ``answered``, ``budget_exhausted``, ``error`` or ``interrupted``.

    ``interrupted``: the run was cancelled (Ctrl-C, a cancelled task); it is recorded, then the
    cancellation goes on.
    """

    run_id: str
    task: str
    answer: str = ""
    status: RunStatus = "answered"
    error: str | None = None
    steps: list[Step] = Field(default_factory=list)
    citations: list[Citation] = Field(default_factory=list)
    artifacts: list[Artifact] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    timings: Timings = Field(default_factory=Timings)


class _Event(BaseModel):
    run_id: str
    t: float = Field(0.0, description="seconds since the run started")


class RunStarted(_Event):
    type: Literal["run_started"] = "run_started"
    task: str
    model: str
    tools: list[str]
    files: list[str] = Field(default_factory=list, description="files handed in with this turn, as the model sees them")


class StepStarted(_Event):
    type: Literal["step_started"] = "step_started"
    step: int


class Token(_Event):
    type: Literal["token"] = "token"
    step: int
    text: str


class ModelTurnEvent(_Event):
    """The model's whole turn: its text and calls (transcripts replay these)."""

    type: Literal["model_turn"] = "model_turn"
    step: int
    turn: ModelTurn


class ToolCallEvent(_Event):
    type: Literal["tool_call"] = "tool_call"
    step: int
    call: ToolCall


class ToolProgress(_Event):
    type: Literal["tool_progress"] = "tool_progress"
    tool: str
    message: str
    fraction: float | None = None


class ToolStream(_Event):
    """Output of a running call as it comes (a cell's ``stdout``/``stderr``); the observation has all of it."""

    type: Literal["tool_stream"] = "tool_stream"
    tool: str
    stream: str
    text: str


class Notice(_Event):
    """Something the user should know once, outside the conversation (e.g. the sandbox tier in force)."""

    type: Literal["notice"] = "notice"
    source: str
    message: str


class ToolResult(_Event):
    type: Literal["tool_result"] = "tool_result"
    step: int
    observation: Observation


class FinalAnswer(_Event):
    type: Literal["final_answer"] = "final_answer"
    answer: str
    citations: list[Citation] = Field(default_factory=list)


class RunError(_Event):
    type: Literal["error"] = "error"
    message: str


class RunFinished(_Event):
    """Always the last event of a run."""

    type: Literal["run_finished"] = "run_finished"
    result: RunResult


Event = Annotated[
    Union[RunStarted, StepStarted, Token, ModelTurnEvent, ToolCallEvent, ToolProgress, ToolStream, Notice,
          ToolResult, FinalAnswer, RunError, RunFinished],
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(line: str) -> Event:
    """Read one JSON line of a transcript or of ``agent run --json`` back into its event."""
    return EVENT_ADAPTER.validate_json(line)
