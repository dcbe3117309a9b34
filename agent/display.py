"""What a person sees in the terminal: the event stream drawn with rich."""

from __future__ import annotations

from collections import deque

from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.syntax import Syntax
from rich.text import Text

from .events import (Event, FinalAnswer, ModelTurnEvent, Notice, RunError, RunFinished, StepStarted, Token,
                     ToolCallEvent, ToolProgress, ToolResult, ToolStream)
from .messages import ToolCall
from .tool import strip_fence

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
        self.tail.extend(line[-200:] for line in lines)
        self.refresh()

    def get_renderables(self):
        yield from super().get_renderables()
        shown = [*self.tail, self._partial] if self._partial else list(self.tail)
        if shown:
            yield Text("\n".join(shown[-LIVE_LINES:]), style="dim")


class EventDisplay:
    """Draws events as they come: tokens live, then each call, observation and the final answer."""

    def __init__(self, console: Console | None = None, *, stream_tokens: bool | None = None,
                 errors: Console | None = None):
        self.console = console or Console()
        self.errors = errors or Console(stderr=True)
        self.stream_tokens = self.console.is_terminal if stream_tokens is None else stream_tokens
        self._progress: _LiveProgress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._mid_line = False

    def show(self, event: Event) -> None:
        if isinstance(event, Token):
            if self.stream_tokens:
                self.console.print(Text(event.text, style="dim"), end="")
                self._mid_line = True
            return
        self._end_line()
        if isinstance(event, StepStarted):
            self.console.rule(f"[bold]Step {event.step}", style="dim")
        elif isinstance(event, ModelTurnEvent):
            if event.turn.tool_calls and event.turn.content.strip():
                self.console.print(Text(event.turn.content.strip(), style="italic"))
        elif isinstance(event, ToolCallEvent):
            self.console.print(Panel(_call_body(event.call), title=Text(event.call.name, style="cyan"), title_align="left",
                                     border_style="cyan"))
        elif isinstance(event, ToolProgress):
            self._update_progress(event.tool, event.message, event.fraction)
        elif isinstance(event, ToolStream):
            self._update_progress(event.tool, None, None)
            assert self._progress is not None
            self._progress.add_output(event.text)
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
        tokens = f"{usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens"
        if usage.reused_tokens or usage.prefilled_tokens:
            tokens += f" ({usage.prefilled_tokens} prefilled, {usage.reused_tokens} reused from cache)"
        status = {"answered": "[green]answered", "budget_exhausted": "[yellow]budget exhausted",
                  "error": "[red]error", "interrupted": "[yellow]interrupted"}[result.status]
        self.console.print(f"[dim]{status}[/] [dim]· {len(result.steps)} steps · {tokens} · "
                           f"{result.timings.total_s:.1f} s[/dim]")

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

    def stop(self) -> None:
        """Take down the live progress lines (the run ended, or was interrupted)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()
        self._end_line()

    def _end_line(self) -> None:
        if self._mid_line:
            self.console.print()
            self._mid_line = False


def error_line(message: str) -> Text:
    """``error: message`` for stderr; the message is shown as written (no markup)."""
    return Text.assemble(("error:", "red"), " ", message)


def _call_body(call: ToolCall):
    if call.name == "python" and call.syntax == "glm4":
        return Syntax(strip_fence(call.body), "python", theme="ansi_dark", word_wrap=True)
    return Text(call.body if call.body else str(call.arguments))
