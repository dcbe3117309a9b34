"""What the agent keeps for the whole process, owned by one object: :class:`Runtime`.

Sync tools run on its worker threads: daemon threads of its own rather than asyncio's executor, so a
call still running when a run ends (its wall time spent, Ctrl-C) is abandoned and never keeps the
process from exiting. Tools register what they keep beyond one agent (the sandbox's kernels and
messaging context, warm diffusion pipelines) with :meth:`Runtime.on_close`.

An application uses the process's default runtime without thinking of it; tests (or an app that
wants to release everything at a chosen moment) build their own, hand it to ``Agent(runtime=...)``,
and close it.

>>> runtime = Runtime()
>>> agent = Agent(model=model, tools=[convert], runtime=runtime)   # doctest: +SKIP
>>> runtime.close()          # worker threads end, registered resources are released
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import queue
import threading
from typing import Any, Callable

_STOP = None  # a worker that takes this from the queue ends


class Runtime:
    """The process-wide resources of agents: worker threads for sync tools, and what tools register."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._idle = 0
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._closers: list[Callable[[], None]] = []
        self.closed = False

    async def run_in_thread(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` on a worker thread; cancelling the await abandons the call."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        context = contextvars.copy_context()

        def job() -> None:
            try:
                settle = functools.partial(_settle, future, context.run(fn, *args, **kwargs), None)
            except BaseException as exc:  # handed to the awaiting side
                settle = functools.partial(_settle, future, None, exc)
            with self._lock:  # idle before the result is out, so the next call reuses this thread
                self._idle += 1
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits for this any more
                loop.call_soon_threadsafe(settle)

        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1
        self._jobs.put(job)
        if start:
            thread = threading.Thread(target=self._work, name="tool-worker", daemon=True)
            with self._lock:
                self._threads.add(thread)
            thread.start()
        return await future

    def _work(self) -> None:
        try:
            while (job := self._jobs.get()) is not _STOP:
                job()
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    @property
    def worker_threads(self) -> list[threading.Thread]:
        """The worker threads alive now (a call abandoned mid-way keeps its thread until it returns)."""
        with self._lock:
            return [thread for thread in self._threads if thread.is_alive()]

    def on_close(self, closer: Callable[[], None]) -> None:
        """Call ``closer`` when the runtime closes (once, however often it is registered)."""
        with self._lock:
            if closer not in self._closers:
                self._closers.append(closer)

    def close(self, timeout: float = 5.0) -> None:
        """Release what was registered (last first) and end the idle worker threads."""
        with self._lock:
            closers, self._closers = self._closers[::-1], []
            threads = list(self._threads)
        for closer in closers:
            closer()
        for _ in threads:
            self._jobs.put(_STOP)
        for thread in threads:
            thread.join(timeout)  # one still running an abandoned call ends when the call does
        self.closed = True


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if not future.done():
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)


_default: Runtime | None = None
_default_lock = threading.Lock()
_current: contextvars.ContextVar[Runtime | None] = contextvars.ContextVar("agent_runtime", default=None)


def default_runtime() -> Runtime:
    """The process's runtime, made on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Runtime()
        return _default


def current_runtime() -> Runtime:
    """The runtime of the agent whose run is in progress here, else the process's default."""
    return _current.get() or default_runtime()


def use_runtime(runtime: Runtime) -> None:
    """Make ``runtime`` the current one for this task and what it calls (the loop does this for each run)."""
    _current.set(runtime)
