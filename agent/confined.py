"""Untrusted documents parsed in a child process with CPU, memory and time limits.

A 13 KB PDF can keep a parser busy for a minute, and a zipped office file can expand to gigabytes.
Parsing such input in a worker thread would leave the thread running after the run returned (a
thread cannot be killed); a child process can. :func:`run_confined` calls ``module:function(payload)``
in a fresh interpreter with ``RLIMIT_AS`` and ``RLIMIT_CPU`` set, kills it at the deadline, and
returns what the function returned (anything JSON can carry).

>>> run_confined("json:loads", b"[1, 2]", timeout_s=10)      # doctest: +SKIP
[1, 2]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from .errors import AgentError

_CHILD = """
import importlib, json, resource, sys
memory, cpu = int(sys.argv[2]), int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
module, _, name = sys.argv[1].partition(":")
data = sys.stdin.buffer.read()
try:
    answer = {"value": getattr(importlib.import_module(module), name)(data)}
except MemoryError:
    answer = {"error": "it needs more memory than the limit allows"}
except Exception as exc:
    answer = {"error": f"{type(exc).__name__}: {exc}"}
sys.stdout.write(json.dumps(answer))
"""


class ConfinedError(AgentError):
    """The confined call failed: it raised, ran out of time, CPU or memory, or crashed."""


def run_confined(target: str, payload: bytes, *, timeout_s: float, memory_mb: int = 1024,
                 cpu_s: int | None = None) -> Any:
    """``module:function(payload)`` in a child process; its return value, or :class:`ConfinedError`."""
    cpu = cpu_s if cpu_s is not None else max(1, int(timeout_s) + 1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # the parent's imports
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD, target, str(memory_mb * 2**20), str(cpu)],
                              input=payload, capture_output=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:  # subprocess.run killed the child already
        raise ConfinedError(f"it took longer than {timeout_s:g} s, so it was stopped") from None
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        why = f"signal {-done.returncode}" if done.returncode < 0 else f"exit code {done.returncode}"
        raise ConfinedError(f"the parser stopped ({why}: out of memory or CPU time)") from None
    if "error" in answer:
        raise ConfinedError(answer["error"])
    return answer["value"]
