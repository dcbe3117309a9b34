"""Jupyter kernels under OS isolation: the engine of the ``python`` tool.

>>> from sandbox import Sandbox
>>> with Sandbox() as sb:                      # doctest: +SKIP
...     print(sb.execute("import sys; sys.version_info[:2]").result)

Tiers (policy ``[sandbox] isolation``): ``bwrap`` (bubblewrap namespaces), ``landlock`` (Landlock +
seccomp + rlimits, without namespaces), ``none`` (explicit only); ``auto`` picks the strongest that
works here. See :mod:`sandbox.isolation`.
"""

from .errors import KernelStartError, SandboxClosedError, SandboxError, SandboxUnavailableError
from .interpreter import Interpreter, find_interpreter
from .isolation import describe_isolation, resolve_isolation, tier_problem
from .kernel import Kernel, shutdown
from .pool import KernelPool
from .results import ExecutionError, ExecutionResult
from .sandbox import AsyncSandbox, Sandbox
from .settings import SandboxSettings

__all__ = [
    "AsyncSandbox",
    "ExecutionError",
    "ExecutionResult",
    "Interpreter",
    "Kernel",
    "KernelPool",
    "KernelStartError",
    "Sandbox",
    "SandboxClosedError",
    "SandboxError",
    "SandboxSettings",
    "SandboxUnavailableError",
    "describe_isolation",
    "find_interpreter",
    "resolve_isolation",
    "shutdown",
    "tier_problem",
]
