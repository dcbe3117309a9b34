"""Which Python the kernel runs, and which directories of its installation the sandbox must show.

By default that is the interpreter the agent itself runs on, as its environment knows it: a venv's
``bin/python`` (a symlink or a copy), not the base interpreter behind it, so the venv's packages are
the kernel's packages. ``[sandbox] python`` picks another one. Either way the interpreter is asked
once (a ~20 ms subprocess, cached) where its prefixes and ``sys.path`` live and whether it has
ipykernel; those directories are mounted read-only in the sandbox, wherever they are (``/tmp``, a
home directory, a conda prefix).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from .errors import SandboxUnavailableError

# What the interpreter reports about itself: run with -I so that nothing from the caller's
# environment (PYTHONPATH, the current directory) leaks into the answer.
_REPORT = """
import importlib.util, json, sys
print(json.dumps({
    "version": "%d.%d.%d" % sys.version_info[:3],
    "prefixes": [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix],
    "path": [p for p in sys.path if p],
    "ipykernel": importlib.util.find_spec("ipykernel") is not None,
}))
"""

# Already visible in every tier (the system directories).
_SYSTEM_ROOTS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")


@dataclass(frozen=True)
class Interpreter:
    """A Python installation the kernel can run on."""

    executable: str  # as given (a venv's bin/python), never resolved to the base interpreter
    version: str
    paths: tuple[str, ...]  # directories (and zip files) to show read-only, outside the system ones
    has_ipykernel: bool

    def require_ipykernel(self) -> None:
        if not self.has_ipykernel:
            raise SandboxUnavailableError(
                f"The Python at {self.executable} has no ipykernel, which the python tool runs on: install it "
                f"with `{self.executable} -m pip install ipykernel`, or set [sandbox] python to an interpreter "
                "that has it.")


def default_python() -> str:
    """The agent's own interpreter, as its environment names it (not ``realpath``)."""
    return os.path.abspath(sys.executable)


def find_interpreter(python: str | None = None) -> Interpreter:
    """Describe ``python`` (a path or a command on ``PATH``; default: the agent's own interpreter)."""
    return _describe(_locate(python) if python else default_python())


def _locate(python: str) -> str:
    found = python if os.sep in python else shutil.which(python)
    if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
        raise SandboxUnavailableError(
            f"[sandbox] python = {python!r} is not an executable file: give the full path of a Python "
            "interpreter (e.g. /path/to/venv/bin/python).")
    return os.path.abspath(found)


@functools.cache
def _describe(executable: str) -> Interpreter:
    try:
        done = subprocess.run([executable, "-I", "-c", _REPORT], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
        report = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        raise SandboxUnavailableError(
            f"{executable} did not run as a Python interpreter: check [sandbox] python.") from None
    real = os.path.realpath(executable)
    candidates = [*report["prefixes"], os.path.dirname(os.path.dirname(real)), *_link_folders(executable),
                  *report["path"]]
    return Interpreter(executable=executable, version=report["version"], paths=tuple(_outermost(candidates)),
                       has_ipykernel=bool(report["ipykernel"]))


def _link_folders(executable: str) -> list[str]:
    """The folders of every symlink on the way from ``executable`` to the real binary.

    A venv made from inside another venv links to that venv's ``bin/python``, which links on to the
    base interpreter: every hop must be visible in the sandbox for the first link to resolve.
    """
    folders, path = [], executable
    for _ in range(40):  # the kernel's own limit on a chain of links
        if not os.path.islink(path):
            break
        folders.append(os.path.dirname(path))
        path = os.path.join(os.path.dirname(path), os.readlink(path))
    return folders


def _outermost(candidates: list[str]) -> list[str]:
    """Existing paths outside the system directories, each given once, nested ones left out.

    A path reached through a symlink is kept as written *and* resolved: a venv's ``pyvenv.cfg`` is
    found next to the executable as written, the files themselves live at the resolved place.
    """
    paths: set[str] = set()
    for path in candidates:
        if not os.path.exists(path):
            continue
        for form in {os.path.abspath(path), os.path.realpath(path)}:
            if not _under(os.path.realpath(form), _SYSTEM_ROOTS):
                paths.add(form)
    return sorted(p for p in paths if not _under(p, tuple(q for q in paths if q != p)))


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)
