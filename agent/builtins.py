"""Built-in tools, found by name through the ``glm_agent.tools`` entry-point group.

The core names no tool: a built-in is a :class:`~agent.tool.Tool` subclass that a package declares
under its name, and it carries everything the core needs to know of it (its policy section and
settings model, its GLM-4 native type and prompt text, its usage hint and display hints). This
project's own three are declared in ``pyproject.toml``; a third-party package adds one the same way::

    [project.entry-points."glm_agent.tools"]
    shell = "my_package.shell:ShellTool"
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from .errors import ToolDefinitionError

if TYPE_CHECKING:
    from .tool import Tool

GROUP = "glm_agent.tools"


@functools.cache
def _declared() -> dict[str, EntryPoint]:
    return {entry.name: entry for entry in entry_points(group=GROUP)}


def builtin_names() -> list[str]:
    """The names of the installed built-ins (nothing is imported)."""
    return list(_declared())


@functools.cache
def builtin_class(name: str) -> type[Tool]:
    """The tool class installed under ``name``, checked; a clear error when there is none or it is broken."""
    from .tool import Tool

    declared = _declared()
    if name not in declared:
        raise ToolDefinitionError(f"Unknown built-in tool {name!r}: choose from {', '.join(declared) or 'none'} "
                                  f"(is the package that provides it installed?).")
    try:
        cls = declared[name].load()
    except Exception as exc:  # an installed plugin that fails to import must not take the agent down with it
        shadow = _shadowing_file(exc, declared[name].module) if isinstance(exc, ImportError) else None
        if shadow:
            raise ToolDefinitionError(
                f"{shadow} hides a package the built-in {name!r} needs ({declared[name].value}): Python finds "
                f"it first on the import path. Rename it, or run from another folder.") from None
        raise ToolDefinitionError(f"The built-in tool {name!r} ({declared[name].value}) does not load: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Tool)):
        raise ToolDefinitionError(f"The built-in {name!r} ({declared[name].value}) is not a Tool subclass.")
    if cls.name != name:
        raise ToolDefinitionError(f"The built-in {name!r} ({declared[name].value}) calls itself {cls.name!r}.")
    if (cls.section is None) != (cls.settings_model is None):
        raise ToolDefinitionError(f"The built-in {name!r} must set both `section` and `settings_model`, or neither.")
    return cls


def _shadowing_file(exc: ImportError, module: str) -> str | None:
    """A file or folder of the user's (``tools.py``, ``sandbox/`` next to their script) that Python found
    instead of a package the built-in needs, when that is why importing it failed."""
    candidates: list[str | None] = [exc.path]  # "cannot import name 'X' from 'sandbox' (.../sandbox/__init__.py)"
    for name in {exc.name, module} - {None}:  # "No module named 'tools.python'": what stands at 'tools'?
        try:
            spec = importlib.util.find_spec(str(name).partition(".")[0])
        except (ImportError, ValueError):
            continue
        if spec is not None:
            candidates.append(spec.origin if spec.origin not in (None, "namespace")
                              else next(iter(spec.submodule_search_locations or []), None))
    here = {Path.cwd().resolve(), Path(sys.path[0] or ".").resolve()}
    for candidate in filter(None, candidates):
        path = Path(candidate).resolve()
        found = path.parent if path.name == "__init__.py" else path
        if found.parent in here:
            return str(found)
    return None


def policy_sections() -> dict[str, type[BaseModel]]:
    """Each installed built-in's policy section and the settings model that validates it.

    A built-in that does not load is left out here (its section is then unknown to the policy);
    using it says why.
    """
    sections: dict[str, type[BaseModel]] = {}
    for name in builtin_names():
        try:
            cls = builtin_class(name)
        except ToolDefinitionError:
            continue
        if cls.section is not None and cls.settings_model is not None:
            sections[cls.section] = cls.settings_model
    return sections


def rediscover() -> None:
    """Look for built-ins again (after installing a package into the running process's environment)."""
    _declared.cache_clear()
    builtin_class.cache_clear()
