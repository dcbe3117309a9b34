"""JSONL transcripts: one event per line, flushed as it happens, so a crash loses nothing."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import IO

from .events import Event, parse_event
from .files import private_dir


class TranscriptWriter:
    """Appends events to a JSONL file.

    Token and tool-stream events are left out: the model turn and the observation carry their text.
    """

    def __init__(self, path: str | Path, *, include_tokens: bool = False):
        self.path = Path(path)
        self.include_tokens = include_tokens
        self._file: IO[str] | None = None
        self._lock = threading.Lock()  # progress events may come from tools' worker threads

    def write(self, event: Event) -> None:
        if event.type in ("token", "tool_stream") and not self.include_tokens:
            return
        with self._lock:
            self._write(event)

    def _write(self, event: Event) -> None:
        if self._file is None:  # owner-only: a transcript holds the whole conversation
            private_dir(self.path.parent)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            self._file = os.fdopen(fd, "a", encoding="utf-8")
        self._file.write(event.model_dump_json() + "\n")
        self._file.flush()
        if event.type == "run_finished":  # reopened by the next run: no file left open between runs
            self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_transcript(path: str | Path) -> list[Event]:
    return [parse_event(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
