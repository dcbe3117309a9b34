"""What a person sees in the terminal: the event stream drawn with rich."""

from __future__ import annotations

import json
import re
import time
from collections import deque
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.spinner import Spinner
from rich.syntax import Syntax
from rich.text import Text

from .events import (Event, FinalAnswer, ModelTurnEvent, Notice, RunError, RunFinished, StepStarted, Token,
                     ToolCallEvent, ToolProgress, ToolResult, ToolStream)
from .messages import ToolCall
from .protocol import glm45
from .protocol.near_json import strip_fence

# What a terminal would obey rather than show: C0 and C1 controls (ESC starts every escape
# sequence; 0x9b is a one-byte CSI), DEL, and the bidirectional overrides that reorder text.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

OBSERVATION_LINES = 30
LIVE_LINES = 5  # lines of a running cell's output shown under its progress line


class _LiveProgress(Progress):
    """Progress lines with the last few lines of the running tools' output beneath them."""

    def __init__(self, *args, **kwargs):
        self.tail: deque[str] = deque(maxlen=LIVE_LINES)
        self._partial = ""
        super().__init__(*args, **kwargs)  # which may render already

    def add_output(self, text: str) -> None:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        # A carriage return redraws its line (progress bars): keep what the line shows last.
        self.tail.extend(visible(line.rsplit("\r", 1)[-1])[-200:] for line in lines)
        self.refresh()

    def get_renderables(self):
        yield from super().get_renderables()
        partial = visible(self._partial.rsplit("\r", 1)[-1])
        shown = [*self.tail, partial] if partial else list(self.tail)
        if shown:
            yield Text("\n".join(shown[-LIVE_LINES:]), style="dim")



class _ModelWait:
    """The live area while the model works: the turn as it is being written, over a spinner with the time waited.

    When the turn is complete the area is taken down and the turn printed once, in the panel that
    held it as it streamed, so nothing appears twice.
    """

    def __init__(self, console: Console, code: CodeHints):
        self.console = console
        self.code = code
        self.started = time.monotonic()
        self.draft = ""

    def __rich__(self) -> RenderableType:
        waited = time.monotonic() - self.started
        spinner = Spinner("dots", Text(f"model · {waited:.1f} s", style="dim"), style="dim")
        if not self.draft.strip():
            return spinner
        # Only the last lines of a long turn: a live area taller than the screen cannot be redrawn.
        return Group(_draft_panel(visible(self.draft), max(3, self.console.height - 6), self.code), spinner)


def _draft_panel(draft: str, lines: int, code: CodeHints) -> Panel:
    """A turn being written, in the panel it will end in: a call's (its tool's name) or the answer's."""
    if glm45.THINK_CLOSE in draft or glm45.CALL_OPEN in draft or draft.lstrip().startswith(glm45.THINK_OPEN):
        return _glm45_draft_panel(draft, lines, code)
    segment = draft.rsplit("<|assistant|>", 1)[-1]  # a thought before a call is shown when the turn ends
    first, newline, rest = segment.partition("\n")
    tool = first.strip()
    if newline and _TOOL_NAME.fullmatch(tool):
        body = "\n".join(rest.split("\n")[-lines:])
        return Panel(_code_or_text(code.get(tool), body), title=Text(tool, style="cyan"), title_align="left",
                     border_style="cyan")
    body = "\n".join(segment.strip("\n").split("\n")[-lines:])
    return Panel(Text(body), title="[green]Answer", title_align="left", border_style="green")


def _glm45_draft_panel(draft: str, lines: int, code: CodeHints) -> Panel:
    """A GLM-4.5+ turn being written: its reasoning while it thinks, then the call being written (its
    arguments as ``key: value``, a code tool's code as code) or the answer."""
    thinking, closed, rest = draft.partition(glm45.THINK_CLOSE)
    if not closed:  # still thinking, or a <think> never closed before a call
        thinking, call_open, tail = draft.partition(glm45.CALL_OPEN)
        rest = call_open + tail
    if not rest.strip():
        text = thinking.replace(glm45.THINK_OPEN, "").strip("\n")
        return Panel(Text("\n".join(text.split("\n")[-lines:]), style="dim italic"), title="[dim]thinking",
                     title_align="left", border_style="dim")
    if glm45.CALL_OPEN not in rest:
        return Panel(Text("\n".join(rest.strip("\n").split("\n")[-lines:])), title="[green]Answer", title_align="left",
                     border_style="green")
    call = glm45.parse_completion(glm45.CALL_OPEN + rest.rsplit(glm45.CALL_OPEN, 1)[-1]).tool_calls[0]
    body = _call_body(call, code.get(call.name))
    return Panel(body, title=Text(call.name or "…", style="cyan"), title_align="left", border_style="cyan")


_TOOL_NAME = re.compile(r"[A-Za-z_][\w\-.]{0,63}")

# Tools whose calls are code: tool name -> (language, the argument holding the code in a JSON call).
CodeHints = dict[str, tuple[str, str]]


class EventDisplay:
    """Draws events as they come: the model's turn live, then each call, observation and the final answer.

    On a terminal the turn being written streams into the panel that will hold it, under a spinner
    with the seconds waited; elsewhere (a pipe, a file) each part is printed once, when complete.
    """

    def __init__(self, console: Console | None = None, *, stream_tokens: bool | None = None,
                 errors: Console | None = None, code: CodeHints | None = None):
        self.console = console or Console()
        self.errors = errors or Console(stderr=True)
        self.stream_tokens = self.console.is_terminal if stream_tokens is None else stream_tokens
        self.code = code or {}  # what each tool declares (Tool.code): its calls are shown highlighted
        self._progress: _LiveProgress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._wait: _ModelWait | None = None
        self._live: Live | None = None

    def show(self, event: Event) -> None:
        """Draw one event. Text from the model, tools and pages is shown, never obeyed (see :func:`visible`)."""
        if isinstance(event, ToolStream):  # its carriage returns mean something: made visible line by line
            self._update_progress(event.tool, None, None)
            assert self._progress is not None
            self._progress.add_output(event.text)
            return
        if isinstance(event, Token):  # the hot path: one string, no copy of the event
            if self._wait is not None:
                self._wait.draft += event.text  # made visible when drawn
            return
        event = _visible_fields(event)
        self._stop_waiting()
        if isinstance(event, StepStarted):
            self.console.rule(f"[bold]Step {event.step}", style="dim")
            self._start_waiting()
        elif isinstance(event, ModelTurnEvent):
            if event.turn.reasoning.strip():  # a thinking model's reasoning: dim, and folded when long
                self.console.print(Text(_folded(event.turn.reasoning.strip()), style="dim italic"))
            if event.turn.tool_calls and event.turn.content.strip():
                self.console.print(Text(event.turn.content.strip(), style="italic"))
        elif isinstance(event, ToolCallEvent):
            self.console.print(Panel(_call_body(event.call, self.code.get(event.call.name)), title=Text(event.call.name, style="cyan"), title_align="left",
                                     border_style="cyan"))
        elif isinstance(event, ToolProgress):
            self._update_progress(event.tool, event.message, event.fraction)
        elif isinstance(event, Notice):
            self.console.print(Text(event.message, style="dim"))
        elif isinstance(event, ToolResult):
            self._finish_progress(event.observation.tool)
            self._show_observation(event)
        elif isinstance(event, FinalAnswer):
            self.console.print(Panel(Markdown(event.answer or "_(no answer)_"), title="[green]Answer",
                                     title_align="left", border_style="green"))
            if event.citations:
                self.console.print("[bold]Sources")
                for citation in event.citations:
                    self.console.print(Text(f"  [{citation.id}] {citation.title} — {citation.url}"))
        elif isinstance(event, RunError):
            self.errors.print(error_line(event.message))
        elif isinstance(event, RunFinished):
            self._show_summary(event)

    def _show_observation(self, event: ToolResult) -> None:
        observation = event.observation
        lines = observation.content.splitlines()
        body = "\n".join(lines[:OBSERVATION_LINES])
        if len(lines) > OBSERVATION_LINES:
            body += f"\n… ({len(lines) - OBSERVATION_LINES} more lines)"
        style = "red" if observation.is_error else "blue"
        title = observation.metadata or observation.tool
        self.console.print(Panel(Text(body), title=Text(title, style=style), title_align="left", border_style=style))
        for artifact in observation.artifacts:  # one unwrapped line each, so the path can be copied whole
            self.console.print(Text(f"saved {artifact.kind}: {artifact.path}", style="bold magenta"), soft_wrap=True)

    def _show_summary(self, event: RunFinished) -> None:
        result = event.result
        usage = result.usage
        parts = ["1 step" if len(result.steps) == 1 else f"{len(result.steps)} steps"]
        if usage.prompt_tokens or usage.completion_tokens:  # only figures the model or server reported
            tokens = f"{usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens"
            if usage.reused_tokens:
                tokens += f" ({usage.prefilled_tokens} prefilled, {usage.reused_tokens} reused from cache)"
            parts.append(tokens)
        parts.append(f"{result.timings.total_s:.1f} s")
        status = {"answered": "[green]answered", "budget_exhausted": "[yellow]budget exhausted",
                  "error": "[red]error", "interrupted": "[yellow]interrupted"}[result.status]
        self.console.print(f"[dim]{status}[/] [dim]· {' · '.join(parts)}[/dim]")

    def _update_progress(self, tool: str, message: str | None, fraction: float | None) -> None:
        """One line per busy tool: a bar when it knows how far it is, a pulse when it does not."""
        if self._progress is None:
            self._progress = _LiveProgress(TextColumn("{task.description}"), BarColumn(),
                                           TextColumn("{task.fields[note]}"), console=self.console, transient=True)
            self._progress.start()
        task = self._tasks.get(tool)
        if task is None:
            task = self._tasks[tool] = self._progress.add_task(tool, total=None, note="")
        if message is not None:
            self._progress.update(task, total=None if fraction is None else 1.0, completed=fraction or 0.0, note=message)

    def _finish_progress(self, tool: str) -> None:
        if self._progress is not None and tool in self._tasks:
            self._progress.remove_task(self._tasks.pop(tool))
            if not self._tasks:
                self.stop()

    def _start_waiting(self) -> None:
        if self.stream_tokens:
            self.stop()  # one live area at a time: progress lines of tools a deadline abandoned go
            self._wait = _ModelWait(self.console, self.code)
            self._live = Live(self._wait, console=self.console, refresh_per_second=8, transient=True)
            self._live.start()

    def _stop_waiting(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = self._wait = None

    def stop(self) -> None:
        """Take down the live area and progress lines (the run ended, or was interrupted)."""
        self._stop_waiting()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()


REASONING_LINES = 6


def _folded(reasoning: str) -> str:
    lines = reasoning.splitlines()
    shown = "\n".join(lines[:REASONING_LINES])
    more = len(lines) - REASONING_LINES
    return "thinking: " + shown + (f"\n… ({more} more lines in the transcript)" if more > 0 else "")


def error_line(message: str) -> Text:
    """``error: message`` for stderr; the message is shown as written (no markup, no control sequences)."""
    return Text.assemble(("error:", "red"), " ", visible(message))


def visible(text: str) -> str:
    """``text`` with every control character spelled out (``\\x1b``, ``\\r``, ``\\u202e``) instead of obeyed.

    Newlines and tabs stay. This is what keeps model output, cell output and page titles from
    clearing the screen, setting the title, writing the clipboard (OSC 52) or hiding a line.
    """
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def _visible_fields(value: Any) -> Any:
    """A copy of an event (or any value in it) with :func:`visible` applied to every string."""
    if isinstance(value, str):
        return visible(value)
    if isinstance(value, Path):
        return Path(visible(str(value)))
    if isinstance(value, BaseModel):
        return value.model_copy(update={name: _visible_fields(getattr(value, name)) for name in type(value).model_fields})
    if isinstance(value, list):
        return [_visible_fields(item) for item in value]
    if isinstance(value, dict):
        return {key: _visible_fields(item) for key, item in value.items()}
    return value


def _call_body(call: ToolCall, code: tuple[str, str] | None) -> RenderableType:
    if call.syntax == "xml":  # GLM-4.5+: the arguments as written, a code tool's code as code
        pairs = dict(glm45.read_pairs(call.body))
        if code is not None and code[1] in pairs:
            return _code_or_text(code, pairs[code[1]])
        return Text("\n".join(f"{key}: {value}" for key, value in pairs.items()))
    body = call.body if call.body else json.dumps(call.arguments, ensure_ascii=False)
    if code is not None and call.syntax == "json":  # a chat API's {"code": "..."}: show the code itself
        arguments = call.arguments
        if arguments is None:
            try:
                arguments = json.loads(strip_fence(call.body))
            except (json.JSONDecodeError, RecursionError):
                arguments = None
        if isinstance(arguments, dict) and isinstance(arguments.get(code[1]), str):
            body = arguments[code[1]]
    return _code_or_text(code, body)


def _code_or_text(code: tuple[str, str] | None, body: str) -> RenderableType:
    if code is not None:
        return Syntax(strip_fence(body), code[0], theme="ansi_dark", word_wrap=True)
    return Text(body)
