"""A pool of warm kernels, so that an agent's first ``python`` call does not wait for a kernel start.

One background thread keeps ``size`` kernels started, each importing the ``preload`` modules in a
thread of its own (a claimed kernel answers at once; an import of a module being preloaded waits for
it). ``claim`` hands one out for good: a claimed kernel belongs to one session and is closed with
it, never returned, so no state leaks between sessions. After a claim a replacement is started for
the next session, unless ``refill`` is off (one session in all: a spare would only hold memory).
Closing the pool kills a kernel still starting rather than waiting for it, so a pool closed right
after it was made closes at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any

from .errors import SandboxClosedError, SandboxError
from .isolation import resolve_isolation
from .kernel import Kernel
from .settings import SandboxSettings


def settings_of(policy_or_settings: Any) -> SandboxSettings:
    """Sandbox settings, or those of anything carrying them as ``.sandbox`` (an agent's policy)."""
    if policy_or_settings is None:
        return SandboxSettings()
    if isinstance(policy_or_settings, SandboxSettings):
        return policy_or_settings
    if isinstance(getattr(policy_or_settings, "sandbox", None), SandboxSettings):
        return policy_or_settings.sandbox
    raise TypeError(f"Expected SandboxSettings or a policy, got {type(policy_or_settings).__name__}.")


class KernelPool:
    """Warm sandboxed kernels, started ahead in the background.

    >>> with KernelPool(SandboxSettings(pool_size=1)) as pool:   # doctest: +SKIP
    ...     kernel = pool.claim()          # a ready kernel, in microseconds when one is warm
    ...     kernel.execute("1 + 1").result
    ...     kernel.close()
    '2'
    """

    def __init__(self, policy_or_settings: Any = None, size: int | None = None,
                 *, preload: list[str] | None = None, refill: bool | None = None):
        self.settings = settings_of(policy_or_settings)
        self.size = self.settings.pool_size if size is None else size
        self.preload = self.settings.preload if preload is None else preload
        self.refill = self.settings.pool_refill if refill is None else refill
        self._claimed = False  # without refill, kernels are started ahead only until the first claim
        self._ready: deque[Kernel] = deque()
        self._waiting = 0  # claims blocked on a kernel being started
        self._starting: Kernel | None = None  # the kernel the background thread is starting now
        self._error: BaseException | None = None
        self._closed = False
        self._tier: str | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._fill, name="sandbox-pool", daemon=True)
        self._thread.start()

    @property
    def tier(self) -> str:
        """The isolation tier in force (resolves it now if the pool has not yet)."""
        if self._tier is None:
            self._tier = resolve_isolation(self.settings.isolation, self.settings.python)
        return self._tier

    @property
    def ready(self) -> int:
        """How many warm kernels wait to be claimed."""
        with self._cond:
            return len(self._ready)

    def claim(self, timeout: float | None = None) -> Kernel:
        """A started kernel for one session; the caller closes it. Waits if none is warm yet."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._waiting += 1
            self._cond.notify_all()
            try:
                while not self._ready:
                    if self._closed:
                        raise SandboxClosedError("The kernel pool is closed.")
                    if self._error is not None:
                        error, self._error = self._error, None  # report once; the next claim retries
                        raise error
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise SandboxError(f"No kernel became ready within {timeout:g} s.")
                    self._cond.wait(remaining)
                kernel = self._ready.popleft()
                self._claimed = True
            finally:
                self._waiting -= 1
            self._cond.notify_all()  # start a replacement
            return kernel

    def _fill(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._error is not None or len(self._ready) >= self._wanted()):
                    self._cond.wait()
                if self._closed:
                    return
            kernel = None
            try:
                kernel = Kernel(self.settings, self.tier)
                with self._cond:
                    if self._closed:
                        raise SandboxClosedError("The kernel pool is closed.")
                    self._starting = kernel  # from now on, close() kills it instead of waiting
                kernel.start()
                kernel.preload(self.preload)
            except BaseException as exc:
                if kernel is not None:
                    kernel.close()
                kernel = None
                with self._cond:
                    if not self._closed:
                        self._error = exc
            with self._cond:
                self._starting = None
                if kernel is not None:
                    if self._closed:
                        kernel.close()
                    else:
                        self._ready.append(kernel)
                self._cond.notify_all()

    def _wanted(self) -> int:
        """How many kernels should be ready: those started ahead, and one for each claim waiting."""
        ahead = self.size if self.refill or not self._claimed else 0
        return ahead + self._waiting

    def close(self) -> None:
        """Close the warm kernels and stop starting new ones (claimed kernels are their owners').

        A kernel still starting is killed, not waited for.
        """
        with self._cond:
            self._closed = True
            kernels = list(self._ready)
            self._ready.clear()
            if self._starting is not None:
                kernels.append(self._starting)
            self._cond.notify_all()
        for kernel in kernels:
            kernel.close()
        self._thread.join(timeout=self.settings.startup_timeout_s)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> KernelPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
