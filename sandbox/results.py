"""What a cell returns: :class:`ExecutionResult`, and the text a notebook would show for it."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

_SURROGATE = re.compile("[\ud800-\udfff]")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def strip_ansi(text: str) -> str:
    """Text without terminal colour codes (IPython colours its tracebacks)."""
    return _ANSI.sub("", text)


def clean_text(value: object) -> str:
    """A kernel's string as valid Unicode: a lone surrogate (JSON can escape one) becomes U+FFFD."""
    return _SURROGATE.sub("\ufffd", str(value))


class ExecutionError(BaseModel):
    """The exception a cell raised (or why the kernel stopped): name, message, plain-text traceback."""

    ename: str
    evalue: str
    traceback: list[str] = Field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.ename}: {self.evalue}" if self.evalue else self.ename


class ExecutionResult(BaseModel):
    """The outcome of one ``execute`` call.

    ``result`` is the text of the cell's last expression (``Out[n]``); ``images`` are PNG bytes from
    figures and ``display``; ``timed_out`` says the cell ran past its time and was interrupted;
    ``restarted`` says the kernel had to be restarted (its variables are gone, files are kept).
    """

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    stdout: str = ""
    stderr: str = ""
    result: str | None = None
    images: list[bytes] = Field(default_factory=list)
    error: ExecutionError | None = None
    timed_out: bool = False
    restarted: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out

    def to_text(self, limit: int = 20_000, error_lines: int = 8) -> str:
        """What a notebook would show: output, the last value, the error's last lines, notices."""
        parts = [text.rstrip("\n") for text in (self.stdout, self.stderr) if text.strip()]
        if self.result is not None:
            parts.append(self.result)
        if self.error is not None:
            # IPython frames its tracebacks with rules of dashes: noise for a model.
            lines = [line.rstrip() for line in self.traceback_text() if line.strip() and set(line.strip()) != {"-"}]
            tail = lines[-error_lines:]
            if not tail or not tail[-1].startswith(self.error.ename):
                tail.append(str(self.error))
            parts.append("\n".join(tail))
        if self.timed_out and not self.restarted:
            parts.append("[The cell ran past its time limit and was interrupted; variables are kept.]")
        if self.restarted and not (self.error and self.error.ename in ("KernelDied", "TimeoutError")):
            parts.append("[The kernel was restarted: variables are lost; files in /mnt/data are kept.]")
        text = "\n".join(parts) if parts else "(no output)"
        return truncate(text, limit)

    def traceback_text(self) -> list[str]:
        return self.error.traceback if self.error else []


def truncate(text: str, limit: int) -> str:
    """Keep the head and the tail of ``text`` within ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    keep = max(limit - 60, 2)
    head, tail = text[: keep // 2], text[len(text) - keep // 2 :]
    return f"{head}\n[... {len(text) - len(head) - len(tail)} characters cut ...]\n{tail}"


class CappedText:
    """Collects a stream up to ``limit`` characters: the head and the most recent tail are kept."""

    def __init__(self, limit: int):
        self.limit = limit
        self._head: list[str] = []
        self._head_len = 0
        self._tail = ""
        self.cut = 0

    def add(self, text: str) -> None:
        room = self.limit // 2 - self._head_len
        if room > 0:
            piece = text[:room]
            self._head.append(piece)
            self._head_len += len(piece)
            text = text[room:]
        if not text:
            return
        tail = self._tail + text
        keep = self.limit - self.limit // 2
        if len(tail) > keep:
            self.cut += len(tail) - keep
            tail = tail[-keep:]
        self._tail = tail

    def text(self) -> str:
        head = "".join(self._head)
        if not self.cut:
            return head + self._tail
        return f"{head}\n[... {self.cut} characters of output cut ...]\n{self._tail}"
