"""The public sandbox: a stateful Python session under OS isolation, sync or async."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Callable

from .errors import SandboxClosedError
from .isolation import resolve_isolation
from .kernel import Kernel
from .pool import KernelPool, settings_of
from .results import ExecutionResult


class Sandbox:
    """A notebook-like Python session whose code the operating system confines.

    >>> with Sandbox() as sb:                      # doctest: +SKIP
    ...     sb.execute("x = 6 * 7")
    ...     sb.execute("print(x)").stdout
    '42\\n'

    Args:
        policy_or_settings: a :class:`~agent.policy.Policy` or its ``sandbox`` settings (default:
            the default policy's).
        workdir: a host directory to mount at ``/mnt/data`` (created if missing, kept on close).
            Default: a fresh temporary one, deleted on close.
        pool: take a warm kernel from this pool instead of starting one (ignored with ``workdir``).
    """

    def __init__(self, policy_or_settings: Any = None, *,
                 workdir: str | Path | None = None, pool: KernelPool | None = None):
        self.settings = settings_of(policy_or_settings if pool is None or policy_or_settings else pool.settings)
        if pool is not None and workdir is None:
            self._kernel = pool.claim()
        else:
            self._kernel = Kernel(self.settings, resolve_isolation(self.settings.isolation, self.settings.python),
                                  Path(workdir) if workdir is not None else None)
            try:
                self._kernel.start()
            except BaseException:
                self._kernel.close()
                raise

    @property
    def workdir(self) -> Path:
        """Host path of the session's ``/mnt/data``."""
        return self._kernel.workdir

    @property
    def isolation(self) -> str:
        """The tier in force: ``"bwrap"``, ``"landlock"`` or ``"none"``."""
        return self._kernel.tier

    @property
    def data_dir(self) -> str:
        """Where code in the sandbox sees the workdir (``/mnt/data`` under bubblewrap)."""
        return "/mnt/data" if self.isolation == "bwrap" else str(self.workdir)

    @property
    def file_owner(self) -> int | None:
        """The uid that files put into :attr:`workdir` must belong to, so the code can change them (root only)."""
        return self._kernel.file_owner

    def execute(self, code: str, timeout: float | None = None,
                on_output: Callable[[str, str], None] | None = None) -> ExecutionResult:
        """Run ``code`` as the next notebook cell; state persists between calls.

        ``timeout`` (seconds, default the policy's ``timeout_s``) interrupts the cell; a cell that
        ignores the interrupt, or a kernel that dies, gets the kernel restarted (``restarted``).
        ``on_output(stream, text)`` sees printed output as it comes, from the calling thread.
        """
        return self._kernel.execute(code, timeout, on_output)

    def interrupt(self) -> None:
        """Interrupt the running cell (safe from another thread)."""
        self._kernel.interrupt()

    def stop(self) -> None:
        """Interrupt the running cell; restart the kernel if it does not stop within ``interrupt_grace_s``."""
        self._kernel.stop()

    def restart(self) -> None:
        """Start a fresh kernel on the same workdir (variables are lost, files are kept)."""
        self._kernel.restart()

    def close(self) -> None:
        """Kill the kernel and every process it started; delete the workdir unless it was given."""
        self._kernel.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Sandbox {self.isolation} workdir={self.workdir}>"


class AsyncSandbox:
    """The asyncio face of :class:`Sandbox`; the kernel is started (or claimed) on ``start``.

    Cells run one at a time, in the order ``execute`` was called, like a notebook's: concurrent
    calls (e.g. two ``python`` calls in one agent turn) wait for the cell before them.

    >>> async with AsyncSandbox() as sb:           # doctest: +SKIP
    ...     result = await sb.execute("1 + 1")
    """

    def __init__(self, policy_or_settings: Any = None, *,
                 workdir: str | Path | None = None, pool: KernelPool | None = None):
        self._args = (policy_or_settings, workdir, pool)
        self._sandbox: Sandbox | None = None
        self._starting: asyncio.Future[None] | None = None
        self._run_lock = asyncio.Lock()
        self._state_lock = threading.Lock()  # _sandbox and _closed, also set from the starting thread
        self._closed = False

    async def start(self) -> AsyncSandbox:
        """Start the kernel, or claim a warm one from the pool. Idempotent; concurrent calls share one start."""
        if self._closed:
            raise SandboxClosedError("This sandbox is closed: create a new one.")
        if self._sandbox is None:
            if self._starting is None:
                self._starting = asyncio.ensure_future(asyncio.to_thread(self._create))
                self._starting.add_done_callback(self._started)
            # Shielded: a caller that is cancelled does not abandon a kernel half started.
            await asyncio.shield(self._starting)
        return self

    def _create(self) -> None:
        policy_or_settings, workdir, pool = self._args
        sandbox = Sandbox(policy_or_settings, workdir=workdir, pool=pool)
        with self._state_lock:
            if not self._closed:
                self._sandbox = sandbox
                return
        sandbox.close()  # closed while it was starting
        raise SandboxClosedError("The sandbox was closed while it was starting.")

    def _started(self, future: asyncio.Future[None]) -> None:
        if future.cancelled() or future.exception() is not None:
            self._starting = None  # the next call tries again (and the error is not left unretrieved)

    @property
    def started(self) -> bool:
        """Whether the kernel is running (or claimed), so that :meth:`start` would not wait."""
        return self._sandbox is not None

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            raise SandboxClosedError("The sandbox is not started: `await sandbox.start()` or use `async with`.")
        return self._sandbox

    @property
    def workdir(self) -> Path:
        return self.sandbox.workdir

    @property
    def isolation(self) -> str:
        return self.sandbox.isolation

    @property
    def data_dir(self) -> str:
        return self.sandbox.data_dir

    @property
    def file_owner(self) -> int | None:
        return self.sandbox.file_owner

    async def execute(self, code: str, timeout: float | None = None,
                      on_output: Callable[[str, str], None] | None = None) -> ExecutionResult:
        """Run a cell (see :meth:`Sandbox.execute`) after the cells called before it; cancelling interrupts it.

        ``on_output`` is called from a worker thread.
        """
        async with self._run_lock:
            await self.start()
            sandbox = self.sandbox
            running = asyncio.ensure_future(asyncio.to_thread(sandbox.execute, code, timeout, on_output))
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                sandbox.stop()  # the next cell runs once this one has stopped (or the kernel restarted)
                # Nobody awaits the cell any more: its outcome (maybe "closed", if the session is
                # closing) is retrieved here rather than reported as never retrieved.
                running.add_done_callback(lambda done: done.cancelled() or done.exception())
                raise

    async def aclose(self) -> None:
        """Kill the kernel (also one still starting) and delete the temporary workdir."""
        with self._state_lock:
            self._closed = True
            sandbox = self._sandbox
        if sandbox is not None:
            await asyncio.to_thread(sandbox.close)

    async def __aenter__(self) -> AsyncSandbox:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
