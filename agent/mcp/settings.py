"""MCP servers as settings: the policy's ``[mcp.servers.NAME]`` sections and desktop clients' JSON.

A server is either local (``command``, ``args``, ``env``, ``cwd``: started as a child process that speaks
MCP on its stdin and stdout) or remote (``url``, ``headers``: streamable HTTP, or SSE where the URL's path
ends in ``/sse`` or ``transport = "sse"`` says so). ``tools`` is an allow list of the server's tools,
``require_approval`` asks before calls, ``timeout_s`` bounds each call and ``startup_timeout_s`` its start.

>>> servers = MCPSettings(servers={"files": {"command": "mcp-files", "args": ["/data"]}}).servers
>>> servers["files"].kind
'stdio'

Values of ``env`` and ``headers`` may name environment variables, ``${VAR}``; they are read when the
server starts (:func:`expand`), so a policy holds the names, never the secrets.

This module imports nothing of the MCP SDK: a policy that declares servers costs nothing until one starts.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import PolicyError

# A server's name starts its tools' names (see agent.mcp.names): no '__' in it and no '_' at its end, so
# that the first '__' of a tool's name always ends the server's part.
_SERVER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9\-]*(?:_[A-Za-z0-9\-]+)*")
SERVER_NAME_RULE = ("must start with a letter and be letters, digits, '-' and single '_' (not '__', not ending "
                    "in '_'), at most 30 characters")
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
# Keys some desktop clients write into their JSON that say nothing about how to reach the server.
_DESKTOP_ONLY_KEYS = frozenset({"autoApprove", "alwaysAllow", "description", "disabledTools", "icon", "name"})


def is_server_name(name: str) -> bool:
    return len(name) <= 30 and _SERVER_NAME.fullmatch(name) is not None


class MCPServerSettings(BaseModel):
    """One MCP server: how to reach it and what the agent may use of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: str | None = Field(None, description="a local server: the program to start (it speaks MCP on its "
                                                   "stdin and stdout)")
    args: list[str] = Field(default_factory=list, description="the program's arguments")
    env: dict[str, str] = Field(default_factory=dict, description="its environment on top of PATH, HOME, USER, "
                                                                  "SHELL, TERM, LOGNAME; values may be ${VAR}")
    cwd: str | None = Field(None, description="the folder it starts in (unset: the current one)")
    url: str | None = Field(None, description="a remote server: its streamable HTTP endpoint (SSE when the path "
                                              "ends in /sse)")
    headers: dict[str, str] = Field(default_factory=dict, description="HTTP headers sent to it; values may be ${VAR}")
    transport: Literal["http", "sse"] | None = Field(None, description="with url: http (streamable HTTP) or sse "
                                                                      "(unset: sse when the path ends in /sse)")
    tools: list[str] | None = Field(None, description="the server's tools the agent gets, by the server's names "
                                                      "(unset: all)")
    require_approval: bool | list[str] = Field(False, description="ask before each call: true for all its tools, "
                                                                 "or a list of them")
    timeout_s: float = Field(60.0, gt=0, description="longest one call may take")
    startup_timeout_s: float = Field(30.0, gt=0, description="longest it may take to start and answer MCP's "
                                                             "handshake")

    @property
    def kind(self) -> Literal["stdio", "http", "sse"]:
        """How the server is reached: ``stdio`` (a child process), ``http`` (streamable HTTP) or ``sse``."""
        if self.command is not None:
            return "stdio"
        if self.transport is not None:
            return self.transport
        path = (self.url or "").split("?", 1)[0].rstrip("/")
        return "sse" if path.endswith("/sse") else "http"

    def problem(self) -> str | None:
        """What makes these settings unusable, as the end of a sentence; ``None`` when they are fine."""
        local, remote = self.command is not None, self.url is not None
        if local and remote:
            return ("has both command and url: give command (and args) for a server this machine starts, or url "
                    "for one that runs elsewhere, not both")
        if not local and not remote:
            return "has neither command nor url: give command (and args) to start a local server, or its url"
        if local and not self.command.strip():  # type: ignore[union-attr]
            return "has an empty command"
        if local and (self.headers or self.transport):
            return "sets headers or transport, which only a server reached by url takes"
        if remote and (self.args or self.env or self.cwd):
            return "sets args, env or cwd, which only a server started by command takes"
        if remote and not re.match(r"https?://", self.url or ""):
            return f"has url {self.url!r}, which is not an http:// or https:// address"
        for where, values in (("env", self.env), ("headers", self.headers)):
            for key, value in values.items():
                for variable in _VARIABLE.findall(value):
                    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", variable):
                        return f"has {where} {key} = {value!r}, where ${{{variable}}} is not a variable name"
        return None


class MCPSettings(BaseModel):
    """The ``[mcp]`` section: the MCP servers whose tools an agent gets, by name (``[mcp.servers.NAME]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    servers: dict[str, MCPServerSettings] = Field(default_factory=dict, description="MCP servers whose tools the "
                                                                                  "agent gets, by name")

    @model_validator(mode="after")
    def _usable(self) -> "MCPSettings":
        # A PolicyError, not a ValueError: pydantic passes it on as it is, a sentence naming the section.
        for name, server in self.servers.items():
            if not is_server_name(name):
                raise PolicyError(f"[mcp.servers.{name}]: a server's name {SERVER_NAME_RULE}; rename it.")
            problem = server.problem()
            if problem is not None:
                raise PolicyError(f"[mcp.servers.{name}] {problem}.")
        return self


def expand(values: dict[str, str], where: str, environ: dict[str, str] | None = None) -> tuple[dict[str, str], set[str]]:
    """``values`` with each ``${VAR}`` replaced by the variable's value, and the values put in (to keep out of
    what is shown). ``where`` names the setting for the error a variable that is not set gets."""
    environ = dict(os.environ) if environ is None else environ
    secrets: set[str] = set()

    def value_of(match: re.Match[str]) -> str:
        variable = match.group(1)
        if variable not in environ:
            raise PolicyError(f"{where} uses ${{{variable}}}, which is not set: export {variable}=... before "
                              "starting the agent.")
        secrets.add(environ[variable])
        return environ[variable]

    expanded = {key: _VARIABLE.sub(value_of, value) for key, value in values.items()}
    return expanded, {secret for secret in secrets if len(secret) >= 4}  # shorter: too common to hide


def load_mcp_config(path: str | Path) -> dict[str, MCPServerSettings]:
    """The servers of a desktop MCP client's JSON config, ``{"mcpServers": {"NAME": {...}}}``.

    Each entry takes the keys of ``[mcp.servers.NAME]``; ``type`` or ``transport`` (``stdio``, ``http``,
    ``streamable-http``, ``sse``) are read too, an entry with ``"disabled": true`` is left out, and keys
    only some desktop clients' interfaces use (``autoApprove``, ``alwaysAllow``, ``description``...) are
    ignored.
    """
    where = f"MCP config {str(path)!r}"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError(f"{where} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{where} cannot be read ({exc}).") from None
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{where} is not valid JSON: {exc}.") from None
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise PolicyError(f'{where} has no "mcpServers" object: write {{"mcpServers": {{"name": {{"command": ..., '
                          '"args": [...]}}}}}}.')
    entries: dict[str, Any] = {}
    for name, entry in servers.items():
        if not isinstance(entry, dict):
            raise PolicyError(f"{where}: the server {name!r} is not an object of settings.")
        if entry.get("disabled") is True:
            continue
        entries[name] = _desktop_entry(entry, f"{where}: the server {name!r}")
    try:
        return MCPSettings(servers=entries).servers
    except PolicyError as exc:
        raise PolicyError(f"{where}: {exc}") from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"][1:])  # servers.NAME.key → NAME.key
            problems.append(f"unknown key {key!r}" if error["type"] == "extra_forbidden" else f"{key!r}: {error['msg']}")
        raise PolicyError(f"{where}: {'; '.join(problems)}.") from None


def _desktop_entry(entry: dict[str, Any], where: str) -> dict[str, Any]:
    """A desktop client's server entry as ``[mcp.servers.NAME]`` keys."""
    entry = {key: value for key, value in entry.items() if key not in _DESKTOP_ONLY_KEYS and key != "disabled"}
    kind = entry.pop("type", None)
    kind = entry.pop("transport", kind)
    if kind is None or kind == "stdio":
        return entry
    kinds = {"http": "http", "streamable-http": "http", "streamable_http": "http", "streamableHttp": "http",
             "sse": "sse"}
    if kind not in kinds:
        raise PolicyError(f"{where} has type {kind!r}: use stdio, http (streamable HTTP) or sse.")
    return {**entry, "transport": kinds[kind]}
