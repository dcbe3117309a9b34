"""The progress of a run: a rich bar with running accuracy, tokens and tool calls (plain lines when piped)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RunProgress:
    """Counts finished runs; shows them live on a terminal, or a line every tenth of the way when piped."""

    def __init__(self, console: Console, total: int, done: list[dict[str, Any]], scored: bool, label: str):
        self.console, self.total, self.scored, self.label = console, total, scored, label
        self.runs = self.right = self.score = self.tokens = self.calls = self.errors = 0
        self.score_total = 0.0
        for record in done:
            self._count(record)
        self.resumed = self.runs
        self._progress: Progress | None = None
        self._bar: Any = None
        self._every = max(1, (total - self.resumed) // 10)

    def _count(self, record: dict[str, Any]) -> None:
        self.runs += 1
        self.score_total += float(record.get("score") or 0.0)
        self.tokens += int(record.get("prompt_tokens", 0)) + int(record.get("completion_tokens", 0))
        self.calls += int(record.get("tool_calls", 0))
        self.errors += record.get("status") == "error"

    def stats(self) -> str:
        parts = []
        if self.scored and self.runs:
            parts.append(f"accuracy {100 * self.score_total / self.runs:.1f}%")
        parts += [f"{self.tokens:,} tokens", f"{self.calls:,} tool calls"]
        if self.errors:
            parts.append(f"{self.errors} errors")
        return " · ".join(parts)

    def __enter__(self) -> "RunProgress":
        if self.resumed:
            self.console.print(f"{self.label}: resuming, {self.resumed} of {self.total} runs already done")
        if self.console.is_terminal:
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                      console=self.console)
            self._progress.start()
            self._bar = self._progress.add_task(self.label, total=self.total, completed=self.resumed,
                                                stats=self.stats())
        return self

    def update(self, record: dict[str, Any]) -> None:
        self._count(record)
        if self._progress is not None:
            self._progress.update(self._bar, completed=self.runs, stats=self.stats())
        elif (self.runs - self.resumed) % self._every == 0 or self.runs == self.total:
            self.console.print(f"{self.label}: {self.runs}/{self.total} runs · {self.stats()}", highlight=False)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
