"""Running one task: an :class:`~agent.Agent` for it, its events counted and recorded, its outcome.

A :class:`TaskExecutor` holds what the tasks of a run share — the model endpoints, the built-in tool
instances and the policy — and makes a fresh agent per task on top of them. Built-ins come in
``lanes``, one per task in flight: each lane's python tool keeps its own warm kernel (the pool's
``pool_size``), so N lanes are N warm sandboxes, started and refilled in parallel (kernel starts wait on
I/O more than on the CPU), and each task claims a sandbox of its own from its lane. Each task is its own chat
session, so nothing leaks between tasks; with ``single_turn`` (BFCL) the run stops after the model's
first turn, whose calls are what is scored.

The executor never raises for a task: a failure is the outcome's ``status="error"`` and ``error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

from pydantic import BaseModel, Field

from ..events import ModelTurnEvent, RunFinished, ToolCallEvent
from ..loop import Agent
from ..messages import Message, ToolCall, ToolSpec
from ..models.base import ChatModel, ModelTurn, TokenCallback, Usage
from ..policy import ModelSettings, Policy
from ..protocol.glm45 import decode_arguments
from ..protocol.glm4 import template_messages
from ..protocol.near_json import parse_json_arguments
from ..registry import load_builtin
from ..runtime import Runtime
from ..tool import Tool
from ..transcript import TranscriptWriter
from .datasets import Task
from . import bfcl

Approver = Callable[[ToolCall], bool | Awaitable[bool]]
NOT_EXECUTED = "(not executed: this benchmark scores the calls of the first turn)"


class Outcome(BaseModel):
    """What one run of one task produced (before scoring)."""

    id: str
    attempt: int = 0
    status: str = "answered"  # the run's status; "stopped" when single_turn ended it after the first turn
    answer: str = ""
    calls: list[dict[str, Any]] = Field(default_factory=list)  # single_turn: the first turn's calls, {name: args}
    error: str | None = None
    steps: int = 0
    tool_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    endpoint: str | None = None
    transcript: str | None = None
    trajectory: dict[str, Any] | None = None  # GLM-4 chat format, when asked for


def safe_name(task_id: str) -> str:
    """A task id as a file name: letters, digits, ``-``, ``_`` and ``.``; anything else becomes ``_``."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", task_id).lstrip(".") or "task"
    return name[:120]


def endpoint_label(model: ChatModel) -> str:
    """Where a model answers from, for the records (the served URL, credentials already blanked)."""
    http = getattr(model, "_http", None)
    return str(getattr(http, "base_url", "") or model.name)


class TaskExecutor:
    """Runs tasks, one agent (and one chat session) each, on shared models and tools.

    Args:
        models: one model per endpoint; each task takes the one with the fewest tasks in flight
            (a task keeps its endpoint for all its steps, so a server's prefix cache serves it).
        tools: built-in names and ``Tool`` objects every task gets (built-ins are made once per lane, here;
            ``Tool`` objects are shared by all lanes).
        policy: the policy of every task's agent.
        lanes: how many tasks may run at once, each on its own lane's built-ins.
        transcripts: a folder for one JSONL transcript per task and attempt, or ``None``.
        trajectories: keep each run's conversation in GLM-4 chat format in the outcome.
    """

    def __init__(self, models: Sequence[ChatModel], tools: Sequence[str | Tool], policy: Policy, *,
                 system_prompt: str | None = None, approve: Approver | None = None,
                 runs_dir: str | Path = "agent_runs", transcripts: str | Path | None = None,
                 trajectories: bool = False, single_turn: bool = False, runtime: Runtime | None = None,
                 lanes: int = 1):
        if not models:
            raise ValueError("TaskExecutor needs at least one model.")
        self.models = list(models)
        self.policy = policy
        self.system_prompt = system_prompt
        self.approve = approve
        self.runs_dir = Path(runs_dir).absolute()
        self.transcripts = Path(transcripts).absolute() if transcripts is not None else None
        self.trajectories = trajectories
        self.single_turn = single_turn
        self.runtime = runtime
        self._in_flight = [0] * len(self.models)
        self._next = 0
        # Made once per lane (making a built-in starts nothing); tasks take a free lane and give it back.
        self.lanes: list[list[Tool]] = [[load_builtin(item, policy) if isinstance(item, str) else item
                                         for item in tools] for _ in range(max(1, lanes))]
        self._free: asyncio.Queue[int] | None = None

    @property
    def tool_names(self) -> list[str]:
        return [tool.name for tool in self.lanes[0]]

    def _tools(self) -> list[Tool]:
        """Every tool of every lane, each once."""
        unique: dict[int, Tool] = {}
        for lane in self.lanes:
            unique.update((id(tool), tool) for tool in lane)
        return list(unique.values())

    async def start(self) -> None:
        """Warm the tools (each lane's python tool starts its kernel)."""
        for tool in self._tools():
            await tool.start()

    async def aclose(self) -> None:
        for tool in self._tools():
            await tool.aclose()
        for model in self.models:
            await model.aclose()

    async def _take_lane(self) -> int:
        if self._free is None:
            self._free = asyncio.Queue()
            for index in range(len(self.lanes)):
                self._free.put_nowait(index)
        return await self._free.get()

    def _pick(self) -> int:
        """The endpoint with the fewest tasks in flight; ties go round-robin."""
        n = len(self.models)
        order = [(self._next + i) % n for i in range(n)]
        index = min(order, key=lambda i: self._in_flight[i])
        self._next = (index + 1) % n
        return index

    async def run(self, task: Task, attempt: int = 0) -> Outcome:
        """Run one task once; never raises (but lets a cancellation through)."""
        lane = await self._take_lane()
        index = self._pick()
        self._in_flight[index] += 1
        model = self.models[index]
        outcome = Outcome(id=task.id, attempt=attempt, endpoint=endpoint_label(model))
        started = time.monotonic()
        writer = None
        if self.transcripts is not None:
            path = self.transcripts / f"{safe_name(task.id)}.{attempt}.jsonl"
            writer = TranscriptWriter(path)
            outcome.transcript = str(path)
        try:
            await self._run(task, self.lanes[lane], model, outcome, writer)
        except Exception as exc:  # building the agent (a BFCL schema we cannot take) or a bug: this task fails
            outcome.status, outcome.error = "error", f"{type(exc).__name__}: {exc}"
        finally:
            self._in_flight[index] -= 1
            assert self._free is not None
            self._free.put_nowait(lane)
            if writer is not None:
                writer.close()
            outcome.seconds = time.monotonic() - started
        return outcome

    async def _run(self, task: Task, tools: list[Tool], model: ChatModel, outcome: Outcome,
                   writer: TranscriptWriter | None) -> None:
        task_tools = [Tool.from_schema(bfcl.to_tool_schema(f), _not_executed) for f in task.functions]
        agent = Agent(model=FirstTurnOnly(model) if self.single_turn else model, tools=[*tools, *task_tools], policy=self.policy,
                      system_prompt=task.system or self.system_prompt, approve=self.approve,
                      runs_dir=self.runs_dir / safe_name(task.id), runtime=self.runtime)
        # The agent is not closed: its model and built-ins are the executor's, shared with other tasks.
        usage = Usage()
        async with agent.chat() as session:
            async with contextlib.aclosing(session.astream(task.task)) as events:  # type: ignore[type-var]
                async for event in events:
                    if writer is not None:
                        writer.write(event)
                    if isinstance(event, ModelTurnEvent):
                        outcome.steps += 1
                        usage = usage + event.turn.usage
                        if self.single_turn:
                            outcome.status = "stopped"
                            outcome.answer = event.turn.content.strip()
                            outcome.calls = [{call.name: call_arguments(call, agent.tools.specs())}
                                             for call in event.turn.tool_calls]
                            break
                    elif isinstance(event, ToolCallEvent):
                        outcome.tool_calls += 1
                    elif isinstance(event, RunFinished):
                        result = event.result
                        outcome.status, outcome.answer, outcome.error = result.status, result.answer, result.error
            if self.trajectories:
                outcome.trajectory = {"id": task.id,
                                      "messages": trajectory_messages(session.messages, agent.tools.specs())}
        outcome.prompt_tokens, outcome.completion_tokens = usage.prompt_tokens, usage.completion_tokens


def _not_executed(arguments: dict[str, Any]) -> str:
    return NOT_EXECUTED


class FirstTurnOnly(ChatModel):
    """A model that answers one turn, then holds any next request until the run is stopped.

    ``single_turn`` runs use it so the loop, going on after the first turn while the executor stops
    the run, never sends a second request to the server.
    """

    def __init__(self, model: ChatModel):
        self.model = model
        self.turns = 0

    async def generate(self, messages: list[Message], tools: list[ToolSpec], settings: ModelSettings,
                       on_token: TokenCallback | None = None) -> ModelTurn:
        self.turns += 1
        if self.turns > 1:
            await asyncio.Event().wait()  # cancelled by the executor, which has the first turn
        return await self.model.generate(messages, tools, settings, on_token)

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def builtin_style(self) -> str:
        return self.model.builtin_style


def call_arguments(call: ToolCall, specs: list[ToolSpec]) -> Any:
    """A call's arguments as the model wrote them (JSON types kept), read as the registry reads them."""
    if call.arguments is not None:
        return call.arguments
    try:
        if call.syntax == "xml":
            spec = next((s for s in specs if s.name == call.name), None)
            return decode_arguments(call.body, spec.parameters if spec else {})
        return parse_json_arguments(call.body)
    except (ValueError, RecursionError):
        return {"__unreadable__": call.body}  # scored as an unexpected parameter: the call is wrong


def trajectory_messages(messages: list, tools: list[ToolSpec]) -> list[dict[str, Any]]:
    """A conversation in GLM-4 chat format, as glm-4-9b-chat's fine-tuning data is written.

    Roles ``system`` (carrying ``tools``), ``user``, ``assistant`` and ``observation``; a tool call is an
    assistant message whose ``metadata`` is the tool's name and whose ``content`` is the call's body, so
    the official chat template renders it into the exact prompt the model saw.
    """
    return template_messages(messages, tools)
