"""What a person sees: `agent run` and `agent chat` in a pseudo-terminal, read through a terminal emulator.

The bytes the command writes go through pyte (a VT100 emulator), so the assertions are about the
screen and its scrollback after every redraw: live areas that were taken down are gone, text that
was printed twice shows twice, and an escape sequence the model wrote either shows as text or,
had it been obeyed, changes the emulated terminal (its title, a cleared screen).
"""

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pyte
import pytest
from fake_glm_server import Reply

COLUMNS, ROWS = 100, 30
CODE = "total = sum(range(10))\nprint(total)"


class Terminal:
    """A command running in a pseudo-terminal of COLUMNS x ROWS, its output fed to an emulator."""

    def __init__(self, args, cwd, env=None):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        environment = {**os.environ, "TERM": "xterm-256color", "HF_HUB_OFFLINE": "1", **(env or {})}
        for name in ("COLUMNS", "LINES", "NO_COLOR", "OPENAI_API_KEY", "TERM_PROGRAM"):
            environment.pop(name, None)
        self.proc = subprocess.Popen([sys.executable, "-m", "agent", *args], stdin=slave, stdout=slave, stderr=slave,
                                     cwd=cwd, env=environment, start_new_session=True)
        os.close(slave)
        self.master = master
        self.raw = b""
        self.screen = pyte.HistoryScreen(COLUMNS, ROWS, history=2000)
        self.stream = pyte.ByteStream(self.screen)

    def read_until(self, predicate, timeout=60.0) -> None:
        """Read output until ``predicate(raw_bytes)`` holds; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate(self.raw):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; the screen shows:\n{self.text()}")
            if not self._read(0.1) and self.proc.poll() is not None:
                raise AssertionError(f"the command ended (exit {self.proc.returncode}); the screen shows:\n{self.text()}")

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def finish(self, timeout=60.0) -> int:
        """Wait for the command to end, read all it wrote; its exit code."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"the command did not end; the screen shows:\n{self.text()}")
            self._read(0.1)
        while self._read(0.2):
            pass
        return self.proc.returncode

    def _read(self, wait: float) -> bool:
        """Feed what the command wrote within ``wait`` seconds to the emulator; whether there was any."""
        if not select.select([self.master], [], [], wait)[0]:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: nothing holds the terminal open any more
            return False
        self.raw += data
        self.stream.feed(data)
        return bool(data)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self.master)

    def lines(self) -> list[str]:
        """Every line the person can see or scroll back to, trailing blanks removed."""
        rows = [_row(line) for line in self.screen.history.top] + list(self.screen.display)
        rows = [row.rstrip() for row in rows]
        while rows and not rows[-1]:
            rows.pop()
        return rows

    def text(self) -> str:
        return "\n".join(self.lines())

    def cells(self, needle: str):
        """The emulator's cells of the first visible line containing ``needle`` (for its colours)."""
        rows = list(self.screen.history.top) + [self.screen.buffer[y] for y in range(ROWS)]
        for row in rows:
            text = _row(row)
            if needle in text:
                start = text.index(needle)
                return [row[x] for x in range(start, start + len(needle))]
        raise AssertionError(f"{needle!r} is not on the screen:\n{self.text()}")


def _row(line) -> str:
    return "".join(line[x].data for x in range(COLUMNS))


@pytest.fixture
def terminal(tmp_path):
    started = []

    def start(*args, env=None):
        started.append(Terminal(args, tmp_path, {"HOME": str(tmp_path), **(env or {})}))
        return started[-1]

    yield start
    for term in started:
        term.close()


HOSTILE = "Done: 45.\x1b]0;pwned\x07\x1b[2J \x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07 ok"


@pytest.mark.parametrize("backend", ["completions", "chat"])
def test_run_shows_each_part_once_with_code_highlighted(fake_server, terminal, backend):
    fake_server.chunk_delay = 0.03  # a model that takes its time: the live panel and spinner show
    if backend == "chat":
        fake_server.script([Reply(content="I will add them up.", tool_calls=[("python", {"code": CODE})]),
                            Reply(content="The sum is **45**. " + HOSTILE)])
    else:
        fake_server.script([f"\nI will add them up.<|assistant|>python\n```python\n{CODE}\n```",
                            "\nThe sum is **45**. " + HOSTILE])
    term = terminal("run", "Add the numbers 0 to 9", "--base-url", fake_server.url, "--model", fake_server.model,
                    "--backend", backend, "--tools", "python")
    assert term.finish() == 0, term.text()
    text = term.text()

    # each part once: the streamed draft was taken down and the settled panel drawn in its place
    assert text.count("I will add them up.") == 1, text
    assert text.count("total = sum(range(10))") == 1, text
    assert text.count("The sum is 45.") == 1, text
    assert text.count("Step 1") == 1 and text.count("Step 2") == 1, text
    assert "model ·" in term.raw.decode("utf-8", "replace"), "no spinner while waiting for the model"
    assert "model ·" not in text, "the spinner was left on the screen"
    # code is highlighted (coloured), whichever backend delivered it, and never shown as a JSON string
    assert any(cell.fg != "default" for cell in term.cells("total = sum(range(10))")), text
    assert '\\n' not in text and '"code"' not in text, text
    assert "45" in text and "answered" in text  # the cell ran in the sandbox and the summary came
    # what the model wrote was shown, not obeyed: no title set, nothing cleared, no clipboard write
    assert term.screen.title == "" and "\\x1b]0;pwned\\x07" in text and "\\x1b[2J" in text, text
    assert "\x1b]52" not in term.raw.decode("utf-8", "replace")


def test_chat_has_a_banner_help_history_and_line_editing(fake_server, terminal, tmp_path):
    fake_server.script(["\nHello there!", "\nStill here."])
    term = terminal("chat", "--base-url", fake_server.url, "--model", fake_server.model, "--tools", "none")

    def prompt_count(n):
        return lambda raw: raw.count(b"you> ") >= n

    term.read_until(prompt_count(1))
    term.type("/help\r")
    term.read_until(prompt_count(2))
    term.type("/bogus\r")  # a mistyped command is said so, not sent to the model
    term.read_until(prompt_count(3))
    term.type("hi\r")
    term.read_until(prompt_count(4))
    term.type("\x1b[A\x1b[D\x1b[D!\r")  # up: the last line again; left twice, insert: "!hi"... edited in place
    term.read_until(prompt_count(5))
    term.type("\x04")  # Ctrl-D quits
    assert term.finish() == 0, term.text()
    text = term.text()

    assert text.splitlines()[0].startswith("glm-agent chat · glm-4-9b-chat · tools: none · /help for commands")
    assert "/upload PATH" in text and "/exit" in text  # /help answered here, not sent to the model
    assert "/bogus is not a command: /help lists them." in text
    assert [post.body["messages"][-1]["content"] for post in fake_server.posts] == ["hi", "!hi"]
    assert text.count("Hello there!") == 1 and text.count("Still here.") == 1, text
    history = (tmp_path / ".local" / "state" / "agent" / "chat_history").read_text()
    assert "hi" in history and "/help" in history
    assert (tmp_path / ".local" / "state" / "agent" / "chat_history").stat().st_mode & 0o077 == 0
