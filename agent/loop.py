"""The agent loop: task → model → tool calls → observations → … → final answer.

The whole loop is :meth:`ChatSession._run` below. Everything it does is announced as a typed event
(``agent.events``); ``arun``/``astream`` are the async core, ``run``/``stream`` their sync twins, and
``Agent.chat()`` keeps one conversation (and one python kernel, one browser history) across turns.

>>> agent = Agent(model=ScriptedModel(["\\nHello!"]), tools=[])
>>> agent.run("Say hello").answer
'Hello!'
"""

from __future__ import annotations

import asyncio
import inspect
import queue
import re
import sys
import threading
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Generator, Iterable

from .documents import describe_files
from .errors import AgentError, PolicyError
from .events import (Event, FinalAnswer, ModelTurnEvent, Notice, RunError, RunFinished, RunResult, RunStarted, Step,
                     StepStarted, Timings, Token, ToolCallEvent, ToolProgress, ToolResult, ToolStream)
from .files import collect_files
from .messages import Artifact, Citation, Message, Observation, ObservationPart, ToolCall
from .models.base import ChatModel, ModelTurn
from .builtins import builtin_names
from .mcp import mcp_servers
from .mcp.names import SEPARATOR
from .policy import Policy, load_policy
from .registry import ToolRegistry, default_builtins, error_observation
from .runtime import Runtime, default_runtime, use_runtime
from .tool import Tool, ToolContext
from .transcript import TranscriptWriter

ToolLike = str | Tool | Callable[..., Any]
PathLike = str | Path
Approver = Callable[[ToolCall], bool | Awaitable[bool]]

_CITATION = re.compile(r"【([^†】]+)†[^】]*】")

LAST_TURN_SHARE, LAST_TURN_MAX_S = 0.25, 30.0  # of wall_time_s, kept for the answer after a budget runs out
BUDGET_NOTE = ("You have used up your budget for this task ({reason}). Tools will not run any more: "
               "answer the user now with what you have found.")


class Agent:
    """A tool-using agent.

    Args:
        model: a ``ChatModel``; by default the local GLM-4-9B on transformers, loaded on first use.
        tools: built-in names (``"python"``, ``"simple_browser"``, ``"cogview"``), ``@tool`` functions
            or ``Tool`` objects. By default the built-ins the policy enables. The tools of the MCP
            servers the policy declares (``[mcp.servers.NAME]``) come on top, as ``NAME__tool``. The
            model is shown them by the names its family was trained with (``model.builtin_style``): a
            GLM-4.5+ model sees ``simple_browser`` as ``browser.search``, ``browser.open`` and ``browser.find``.
        policy: ``"default"``, ``"strict"``, ``"trusted"``, a TOML path or a ``Policy``.
        system_prompt: text for the system message. By default the agent adds none of its own.
        approve: called for tools the policy lists under ``require_approval``; returns True to run it.
        runs_dir: where each session's files (images, plots, files the code wrote) go:
            ``runs_dir/<session id>/``.
        transcript: a JSONL file the events are appended to as they happen (all but per-token ones).
        workdir: a host folder the python tool uses as ``/mnt/data`` itself: files in it are the
            code's inputs, and what the code writes stays there (and is listed as artifacts).
        runtime: the :class:`~agent.runtime.Runtime` whose threads run sync tools and which keeps
            what tools hold for the process (default: the process's own).

    Files: ``agent.run(task, files=["data.csv", "reports/"])`` copies them into ``/mnt/data``
    before the model's turn and tells the model what is there; without the python tool, documents
    are read into the conversation as text.
    """

    def __init__(self, model: ChatModel | None = None, tools: Iterable[ToolLike] | None = None,
                 policy: str | Path | Policy | None = "default", system_prompt: str | None = None, *,
                 approve: Approver | None = None, runs_dir: str | Path = "agent_runs",
                 transcript: str | Path | None = None, workdir: str | Path | None = None,
                 runtime: Runtime | None = None):
        self.policy = load_policy(policy)
        self.runtime = runtime or default_runtime()
        self._model = model
        self.system_prompt = system_prompt
        self.approve = approve
        self.runs_dir = Path(runs_dir).absolute()  # artifacts carry host paths that work from anywhere
        self.workdir = Path(workdir).absolute() if workdir is not None else None
        self.transcript = TranscriptWriter(transcript) if transcript else None
        chosen = list(default_builtins(self.policy) if tools is None else tools)
        self.tools = ToolRegistry([*chosen, *mcp_servers(self.policy)], policy=self.policy,
                                  builtin_style=model.builtin_style if model is not None else "all_tools")
        unknown = [name for name in self.policy.tools.require_approval
                   if name not in self.tools and name not in builtin_names()
                   and name.split(SEPARATOR, 1)[0] not in self.policy.mcp.servers]  # an MCP tool, known once started
        if unknown:
            self.tools.close_now()
            raise PolicyError(f"[tools] require_approval names {unknown[0]!r}, which is no tool of this agent "
                              f"({', '.join(self.tools.names) or 'none'}) nor a built-in: check the spelling.")
        self._loop_thread: _LoopThread | None = None

    @property
    def model(self) -> ChatModel:
        model = self._model
        if model is None:
            from .models import TransformersModel

            model = self.model = TransformersModel()
        return model

    @model.setter
    def model(self, model: ChatModel) -> None:
        # The tools are shown by the names the model's family was trained with (GLM-4.5+: browser.search...).
        self.tools.builtin_style = model.builtin_style
        self._model = model

    def chat(self) -> "ChatSession":
        """A conversation that keeps its history, kernel and browser state across turns.

        >>> with agent.chat() as session:          # doctest: +SKIP
        ...     session.run("Define x = 7 in python")
        ...     session.run("Now square x")
        """
        return ChatSession(self)

    # One-shot runs: a session of one turn.
    async def arun(self, task: str, files: Iterable[PathLike] = ()) -> RunResult:
        """Run one task; ``files`` (files or folders) are handed in first (see :meth:`ChatSession.aupload`)."""
        async with self.chat() as session:
            return await session.arun(task, files=files)

    async def astream(self, task: str, files: Iterable[PathLike] = ()) -> AsyncIterator[Event]:
        async with self.chat() as session:
            async for event in session.astream(task, files=files):
                yield event

    def run(self, task: str, files: Iterable[PathLike] = ()) -> RunResult:
        return self._sync(self.arun(task, files=files))

    def stream(self, task: str, files: Iterable[PathLike] = ()) -> Generator[Event, None, None]:
        return self._sync_iter(self.astream(task, files=files))

    async def aclose(self) -> None:
        await self.tools.aclose()
        if self._model is not None:
            await self._model.aclose()
        if self.transcript:
            self.transcript.close()

    def close(self) -> None:
        self._sync(self.aclose())  # on the private loop: works where an event loop already runs (Jupyter)
        if self._loop_thread is not None:
            self._loop_thread.stop()
            self._loop_thread = None

    async def astart(self) -> None:
        """Warm what the tools need ahead of the first call (a kernel for ``python``).

        Constructing an agent starts nothing; without this, each tool starts on first use.
        ``with agent`` / ``async with agent`` call it.
        """
        use_runtime(self.runtime)
        await self.tools.start()

    def start(self) -> None:
        """Sync twin of :meth:`astart`."""
        self._sync(self.astart())

    def __enter__(self) -> "Agent":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> "Agent":
        await self.astart()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # Sync twins run on one private event loop, so kernels and HTTP clients outlive a single call.
    def _sync(self, coro: Awaitable[Any]) -> Any:
        if self._loop_thread is None:
            self._loop_thread = _LoopThread()
        return self._loop_thread.run(coro)

    def _sync_iter(self, agen: AsyncIterator[Event]) -> Generator[Event, None, None]:
        if self._loop_thread is None:
            self._loop_thread = _LoopThread()
        return self._loop_thread.iterate(agen)


class ChatSession:
    """One conversation with an agent. Use ``agent.chat()``; close it (or use ``with``) when done."""

    def __init__(self, agent: Agent):
        self.agent = agent
        self.id = uuid.uuid4().hex[:12]
        self.messages: list[Message] = []
        if agent.system_prompt:
            self.messages.append(Message(role="system", content=agent.system_prompt))
        self._turns = 0
        # Files handed in since the last turn: what the model is told of them, and the paths shown for them.
        self._uploads: list[str] = []
        self._uploaded: list[str] = []
        self._resources = AsyncExitStack()
        # One turn at a time: a second turn started meanwhile waits for the first (histories never mix).
        self._turn = asyncio.Lock()
        self._context = ToolContext(run_id=self.id, artifacts_dir=agent.runs_dir / self.id, policy=agent.policy,
                                    resources=self._resources, workdir=agent.workdir)

    async def aupload(self, *paths: PathLike) -> list[str]:
        """Hand files or folders in; the model is told of them in the next user turn.

        They are checked first (``[files]`` limits; no symlinks, devices or paths outside a given
        folder) and :class:`~agent.errors.FileInputError` names the first problem before anything
        is copied. With the python tool they go to ``/mnt/data`` (returned: where the code sees
        each; a name already taken there gets `` (2)``); otherwise documents are read into the
        conversation as text.
        """
        use_runtime(self.agent.runtime)
        limits = self.agent.policy.files
        files = await asyncio.to_thread(collect_files, paths, limits)
        if not files:
            return []
        seen_as = await self.agent.tools.receive_files(files, self._context)
        note = await asyncio.to_thread(describe_files, files, seen_as, limits.max_document_chars)
        self._uploads.append(note)
        shown = seen_as or [file.name for file in files]
        self._uploaded += shown
        return shown

    def upload(self, *paths: PathLike) -> list[str]:
        """Sync twin of :meth:`aupload`: ``session.upload("data.csv")`` → ``["/mnt/data/data.csv"]``."""
        return self.agent._sync(self.aupload(*paths))

    async def arun(self, task: str, files: Iterable[PathLike] = (),
                   on_event: Callable[[Event], None] | None = None) -> RunResult:
        """Run one user turn. Turns of one session run one at a time: a second waits for the first.

        ``on_event`` gets each event as it happens, on the thread it happens on (tokens of a local
        model come from a worker thread). Unlike ``astream``, cancelling this run still hands it the
        last ``RunFinished`` (status ``interrupted``) before the cancellation goes on: ``agent serve``
        relies on that.
        """
        async with self._turn:
            await self.aupload(*files)
            if on_event is None:  # nobody reads the events of a plain run but a transcript: else none are built
                return await self._run(task, self._record if self.agent.transcript else None)

            def emit(event: Event) -> None:
                self._record(event)
                on_event(event)

            return await self._run(task, emit)

    async def astream(self, task: str, files: Iterable[PathLike] = ()) -> AsyncIterator[Event]:
        """Run one user turn, yielding its events; the last one is ``RunFinished``. One turn at a time."""
        async with self._turn:
            async for event in self._astream(task, files):
                yield event

    async def _astream(self, task: str, files: Iterable[PathLike]) -> AsyncIterator[Event]:
        await self.aupload(*files)
        events: asyncio.Queue[Event | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()

        def emit(event: Event) -> None:
            self._record(event)
            if threading.get_ident() == loop_thread:
                events.put_nowait(event)
            else:  # tokens and progress may come from worker threads
                loop.call_soon_threadsafe(events.put_nowait, event)

        async def produce() -> None:
            try:
                await self._run(task, emit)
            finally:
                loop.call_soon(events.put_nowait, None)  # after any events still queued from threads

        producer = asyncio.create_task(produce())
        try:
            while (event := await events.get()) is not None:
                yield event
            await producer
        finally:
            if not producer.done():
                producer.cancel()
                await asyncio.gather(producer, return_exceptions=True)

    def _record(self, event: Event) -> None:
        if self.agent.transcript:
            self.agent.transcript.write(event)

    def run(self, task: str, files: Iterable[PathLike] = ()) -> RunResult:
        return self.agent._sync(self.arun(task, files=files))

    def stream(self, task: str, files: Iterable[PathLike] = ()) -> Generator[Event, None, None]:
        return self.agent._sync_iter(self.astream(task, files=files))

    async def aclose(self) -> None:
        await self._resources.aclose()

    def close(self) -> None:
        self.agent._sync(self.aclose())

    async def __aenter__(self) -> "ChatSession":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> "ChatSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------
    # The loop

    async def _run(self, task: str, emit: Callable[[Event], None] | None) -> RunResult:
        agent, limits = self.agent, self.agent.policy.agent
        use_runtime(agent.runtime)  # this run's sync tools run on the agent's runtime's threads
        self._turns += 1
        run_id = f"{self.id}-{self._turns}"
        started = time.monotonic()  # the event loop's clock, so deadlines work with asyncio timeouts
        # wall_time_s is a hard limit: the steps stop early enough to leave the last answer its turn.
        deadline = started + limits.wall_time_s - min(LAST_TURN_SHARE * limits.wall_time_s, LAST_TURN_MAX_S)
        announce = _Announcer(run_id, emit)
        result = RunResult(run_id=run_id, task=task)
        citations: dict[str, Citation] = {}
        self._hook_context(run_id, announce)
        uploads, files = self._uploads, self._uploaded
        self._uploads, self._uploaded = [], []
        # As GLM-4 All Tools does: what was handed in comes first in the user's turn.
        self.messages.append(Message(role="user", content="\n".join([*uploads, task])))
        try:
            model = agent.model
            await agent.tools.discover()  # an MCP server's tools, learnt when the agent was not started
            announce(RunStarted, task=task, model=model.name, tools=agent.tools.names, files=files)
            for source, message in self._context.pending_notices:  # told while files were handed in
                announce(Notice, source=source, message=message)
            self._context.pending_notices.clear()
            specs = agent.tools.specs()
            try:  # one deadline for the whole run: cheaper than a timeout around every await
                answered, budget_reason = await _before(deadline, self._steps(model, specs, result, announce))
            except asyncio.TimeoutError:
                answered, budget_reason = False, f"the wall-time limit of {limits.wall_time_s:g} s"
                self._close_open_calls(result.steps[-1] if result.steps else None, announce,
                                       "Not finished: the task's wall-time limit ran out, so the call was abandoned.")
            if not answered:
                await self._last_turn(model, specs, budget_reason, result, announce, started + limits.wall_time_s)
        except AgentError as exc:
            result.status, result.error = "error", str(exc)
            announce(RunError, message=str(exc))
        except Exception as exc:  # a bug or a backend failure we did not foresee: reported, not raised
            result.status, result.error = "error", f"{type(exc).__name__}: {exc}"
            announce(RunError, message=result.error)
        except asyncio.CancelledError:
            # Ctrl-C or a cancelled task: the conversation is left whole (calls cut short get an
            # observation that says so), the interruption is recorded, and the cancellation goes on.
            self._close_open_calls(result.steps[-1] if result.steps else None, announce,
                                   "Not finished: the user interrupted the run.")
            result.status, result.error = "interrupted", "interrupted by the user"
            self._finish(result, citations, started, announce)
            raise
        return self._finish(result, citations, started, announce)

    def _finish(self, result: RunResult, citations: dict[str, Citation], started: float,
                announce: "_Announcer") -> RunResult:
        """Totals, citations and artifacts of the run; announces its end."""
        self._unhook_context()
        artifacts: dict[Path, Artifact] = {}  # a file written by several cells is listed once, as it is now
        for step in result.steps:
            result.usage = result.usage + step.usage
            for observation in step.observations:
                artifacts.update({artifact.path: artifact for artifact in observation.artifacts})
                citations.update({c.id: c for c in observation.citations})
        result.artifacts = list(artifacts.values())
        result.citations = _cited(result.answer, citations)
        result.timings = Timings(total_s=time.monotonic() - started,
                                 model_s=sum(s.model_s for s in result.steps),
                                 tools_s=sum(s.tools_s for s in result.steps))
        if result.status in ("answered", "budget_exhausted"):
            announce(FinalAnswer, answer=result.answer, citations=result.citations)
        announce(RunFinished, result=result)
        return result

    def _hook_context(self, run_id: str, announce: "_Announcer") -> None:
        """Point the tools' context at this run: its id, and its progress, output and notices as events."""
        context = self._context
        context.run_id = run_id
        context.on_progress = lambda tool, message, fraction: announce(
            ToolProgress, tool=tool, message=message, fraction=fraction)
        context.on_output = lambda tool, stream, text: announce(ToolStream, tool=tool, stream=stream, text=text)
        context.on_notice = lambda source, message: announce(Notice, source=source, message=message)

    def _unhook_context(self) -> None:
        """Between runs nobody listens: a notice then waits for the next run (see ``ToolContext.notice``)."""
        self._context.on_progress = self._context.on_output = self._context.on_notice = None

    async def _steps(self, model: ChatModel, specs: list, result: RunResult,
                     announce: "_Announcer") -> tuple[bool, str]:
        """Model turn, tool calls, observations; again until an answer or a budget runs out.

        Returns whether the model answered and, if not, which budget ran out.
        """
        limits = self.agent.policy.agent
        repeats = _RepeatGuard(limits.max_repeated_calls)
        tool_calls = 0
        for index in range(1, limits.max_steps + 1):
            if tool_calls >= limits.max_tool_calls:
                return False, f"the limit of {limits.max_tool_calls} tool calls"
            step = Step(index=index)
            result.steps.append(step)
            announce(StepStarted, step=index)
            turn = await self._model_turn(model, specs, step, announce)
            step.reasoning = turn.reasoning
            if not turn.tool_calls:
                result.answer = turn.answer or ""
                return True, ""
            step.thought, step.tool_calls = turn.content, turn.tool_calls
            allowed = max(0, limits.max_tool_calls - tool_calls)
            tool_calls += len(turn.tool_calls)
            started = time.monotonic()
            try:
                await self._call_tools(allowed, repeats, step, announce)
            finally:
                step.tools_s = time.monotonic() - started
        return False, f"the limit of {limits.max_steps} steps"

    async def _model_turn(self, model: ChatModel, specs: list, step: Step, announce: "_Announcer") -> ModelTurn:
        """Ask the model for one turn and record it."""

        def on_token(text: str) -> None:
            announce(Token, step=step.index, text=text)

        started = time.monotonic()
        try:
            turn = await model.generate(self.messages, specs, self.agent.policy.model,
                                        on_token if announce.sink is not None else None)
        finally:
            step.model_s = time.monotonic() - started
        step.usage = turn.usage
        self.messages.append(turn.as_message())
        announce(ModelTurnEvent, step=step.index, turn=turn)
        return turn

    async def _call_tools(self, allowed: int, repeats: "_RepeatGuard", step: Step, announce: "_Announcer") -> None:
        """Run a turn's calls concurrently; refusals and failures come back as error observations."""

        async def one(position: int, call: ToolCall) -> None:
            announce(ToolCallEvent, step=step.index, call=call)
            refusal = None
            if position >= allowed:
                refusal = "Not run: the tool-call budget of this task is used up."
            elif repeats.is_repeat(call):
                refusal = (f"Not run: this exact call was made {repeats.limit} times in a row. "
                           "Use the results you already have, or try something different.")
            else:
                refusal = await self._unapproved(call)
            if refusal is not None:
                observation = error_observation(call, refusal)
            else:
                observation = await self.agent.tools.call(call, self._context)
            step.observations.append(observation)
            announce(ToolResult, step=step.index, observation=observation)

        if len(step.tool_calls) == 1:
            await one(0, step.tool_calls[0])
        else:
            await asyncio.gather(*(one(i, call) for i, call in enumerate(step.tool_calls)))
        self._add_observations(step)

    def _close_open_calls(self, step: Step | None, announce: "_Announcer", why: str) -> None:
        """The run stops mid-step (wall time, an interruption): calls still running get an observation saying ``why``."""
        if step is None:
            return
        answered = {o.call_id for o in step.observations}
        open_calls = [call for call in step.tool_calls if call.id not in answered]
        if not open_calls:  # the deadline fell between steps: the conversation is complete
            return
        for call in open_calls:
            observation = error_observation(call, why)
            step.observations.append(observation)
            announce(ToolResult, step=step.index, observation=observation)
        self._add_observations(step)

    def _add_observations(self, step: Step) -> None:
        """Observations into the conversation, in the order of the calls (they finish in any order)."""
        order = {call.id: i for i, call in enumerate(step.tool_calls)}
        step.observations.sort(key=lambda o: order.get(o.call_id, len(order)))
        for observation in step.observations:
            self.messages.extend(observation_messages(observation))

    async def _unapproved(self, call: ToolCall) -> str | None:
        """Why a call that must ask first does not run (None: it runs)."""
        # The policy names a tool as it was added: "simple_browser" covers browser.open too.
        if not self.agent.tools.requires_approval(call.name):
            return None
        if self.agent.approve is None:
            return f"Not run: calls to {call.name!r} need the user's approval, and no one could be asked."
        verdict = self.agent.approve(call)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        return None if verdict else f"Not run: the user did not approve this call to {call.name!r}."

    async def _last_turn(self, model: ChatModel, specs: list, reason: str, result: RunResult,
                         announce: "_Announcer", deadline: float) -> None:
        """Out of budget: one more turn, before ``deadline``, in which the model answers and no tool runs."""
        self.messages.append(Message(role="user", content=BUDGET_NOTE.format(reason=reason)))
        step = Step(index=len(result.steps) + 1)
        result.steps.append(step)
        announce(StepStarted, step=step.index)
        result.status = "budget_exhausted"
        try:
            turn = await _before(deadline, self._model_turn(model, specs, step, announce))
        except asyncio.TimeoutError:
            return
        if turn.tool_calls:  # calls made now never run: keep only the text, so no call is left unanswered
            self.messages.pop()
            if turn.content:
                self.messages.append(Message(role="assistant", content=turn.content))
        result.answer = turn.content.strip()


class _Announcer:
    """Stamps events with the run's id and the time since the run started, and hands them on."""

    def __init__(self, run_id: str, sink: Callable[[Event], None] | None):
        self.run_id = run_id
        self.sink = sink  # None: nobody listens, so no event is built
        self.started = time.monotonic()

    def __call__(self, event_type: type, **fields: Any) -> None:
        if self.sink is not None:
            self.sink(event_type(run_id=self.run_id, t=time.monotonic() - self.started, **fields))


async def _before(deadline: float, awaitable: Awaitable[Any]) -> Any:
    """Await with a deadline on the monotonic clock (the event loop's); raises ``asyncio.TimeoutError``."""
    if sys.version_info >= (3, 11):  # a timeout scope is much cheaper than wait_for's extra task
        async with asyncio.timeout_at(deadline):
            return await awaitable
    return await asyncio.wait_for(awaitable, timeout=max(0.0, deadline - time.monotonic()))


def observation_messages(observation: Observation) -> list[Message]:
    """The conversation messages of one observation: one GLM-4 observation turn per part."""
    parts: list[Observation] | list[ObservationPart] = observation.parts or [observation]
    return [Message(role="observation", content=part.content, metadata=part.metadata,
                    tool_call_id=observation.call_id, name=observation.tool) for part in parts]


class _RepeatGuard:
    """Notices the same call (same tool, same arguments) made ``limit`` times in a row."""

    def __init__(self, limit: int):
        self.limit = limit
        self._last: str | None = None
        self._count = 0

    def is_repeat(self, call: ToolCall) -> bool:
        key = f"{call.name}\0{call.body.strip()}\0{call.arguments!r}"
        self._count = self._count + 1 if key == self._last else 1
        self._last = key
        return self._count >= self.limit


def _cited(answer: str, citations: dict[str, Citation]) -> list[Citation]:
    """The citations an answer refers to with ``【id†text】``, in order of first mention."""
    found: dict[str, Citation] = {}
    for match in _CITATION.finditer(answer):
        key = match.group(1).strip()
        if key in citations and key not in found:
            found[key] = citations[key]
    return list(found.values())


class _LoopThread:
    """A private event loop on a daemon thread, so sync calls work inside Jupyter and keep resources alive.

    Ctrl-C in the calling thread cancels the coroutine and waits (briefly) for it to wind down (a
    running cell is interrupted, the run records the interruption), then re-raises ``KeyboardInterrupt``.
    """

    SETTLE_S = 15.0  # how long a cancelled run may take to wind down before the caller moves on

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="agent-loop", daemon=True)
        self.thread.start()

    def _submit(self, coro: Awaitable[Any]) -> tuple[Any, threading.Event]:
        finished = threading.Event()

        async def guarded() -> Any:
            try:
                return await coro
            finally:
                finished.set()

        return asyncio.run_coroutine_threadsafe(guarded(), self.loop), finished

    def _cancel(self, future: Any, finished: threading.Event) -> None:
        if not future.done():
            future.cancel()
            finished.wait(self.SETTLE_S)

    def run(self, coro: Awaitable[Any]) -> Any:
        future, finished = self._submit(coro)
        try:
            return future.result()
        except KeyboardInterrupt:
            self._cancel(future, finished)
            raise

    def iterate(self, agen: AsyncIterator[Event]) -> Generator[Event, None, None]:
        items: queue.Queue[tuple[str, Any]] = queue.Queue()

        async def pump() -> None:
            try:
                async for item in agen:
                    items.put(("event", item))
            except BaseException as exc:  # handed to the consuming thread
                items.put(("error", exc))
            finally:
                items.put(("done", None))

        future, finished = self._submit(pump())
        try:
            while True:
                kind, value = items.get()
                if kind == "event":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:  # also on Ctrl-C or when the consumer stops early
            self._cancel(future, finished)

    def stop(self) -> None:
        """Cancel what is still pending (a kernel start cut short by Ctrl-C), then stop the loop quietly."""

        async def wind_down() -> None:
            pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=5) if pending else None
            for task in pending:  # their outcomes are nobody's now: retrieved, so nothing is reported
                if task.done() and not task.cancelled():
                    task.exception()
            await self.loop.shutdown_asyncgens()

        asyncio.run_coroutine_threadsafe(wind_down(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()
