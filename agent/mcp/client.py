"""Tools from MCP servers: :class:`MCPTools`, one server's tools as one tool of the registry.

An agent gets an :class:`MCPTools` for each ``[mcp.servers.NAME]`` of its policy (and for each server of a
``--mcp-config`` file). The policy knows it by the server's name, as it knows ``simple_browser`` for
``browser.search``; the model is shown the server's tools (:meth:`MCPTools.variants`), each an
:class:`MCPTool` with the server's own JSON schema, named ``SERVER__TOOL`` (:mod:`agent.mcp.names`).

Lifecycle, as for the built-ins: making one starts nothing. :meth:`MCPTools.discover` (from
``Agent.start()``, or before a session's first turn) starts the server once to learn its tools and keeps
that connection for the first session; each session (``agent.chat()``, each ``agent.run``) then has a
connection of its own, opened at its first call to the server and closed with the session. A server that
died is started again at the session's next call to it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import mcp_types as types

from ..errors import ToolDefinitionError, ToolError
from ..messages import ToolSpec
from ..tool import SchemaTool, Tool, ToolContext, ToolOutput
from .connection import MCPConnection
from .content import tool_output
from .names import tool_name
from .settings import SERVER_NAME_RULE, MCPServerSettings, is_server_name


class MCPTool(SchemaTool):
    """One tool of an MCP server as the model is shown it: the server's schema and description, under
    ``SERVER__TOOL``; a call goes to the server on the session's connection."""

    def __init__(self, server: "MCPTools", remote: types.Tool, name: str):
        self.server = server
        self.remote_name = remote.name
        self.requires_approval = server.asks_before(remote.name)
        spec = {"name": name, "description": remote.description or remote.title or "", "parameters": remote.input_schema}
        try:
            super().__init__(spec, self._call)
        except ToolDefinitionError as exc:
            raise ToolDefinitionError(f"The MCP server {server.name!r} offers {remote.name!r}, which cannot be used: "
                                      f"{exc} Leave it out with [mcp.servers.{server.name}] tools = [...].") from None

    async def _call(self, arguments: dict[str, Any], context: ToolContext) -> ToolOutput:
        return await self.server.call(self, arguments, context)


class MCPTools(Tool):
    """The tools of the MCP server ``name``, reached as ``settings`` say."""

    description = "The tools of an MCP server."

    def __init__(self, name: str, settings: MCPServerSettings | dict[str, Any]):
        if not is_server_name(name):
            raise ToolDefinitionError(f"MCP server name {name!r}: a server's name {SERVER_NAME_RULE}.")
        settings = MCPServerSettings.model_validate(settings)
        problem = settings.problem()
        if problem is not None:
            raise ToolDefinitionError(f"The MCP server {name!r} {problem}.")
        self.name = name  # type: ignore[misc]
        self.settings = settings
        self._tools: list[MCPTool] | None = None  # the server's tools, once discovered
        self._warm: MCPConnection | None = None  # the connection discovery opened, for the first session
        self._discovering: asyncio.Lock | None = None

    @property
    def spec(self) -> ToolSpec:  # never shown: the model sees the server's tools instead
        return ToolSpec(name=self.name, description=f"The tools of the MCP server {self.name!r}.")

    def variants(self, builtin_style: str) -> list[Tool]:
        """The server's tools (none before :meth:`discover`)."""
        return list(self._tools or [])

    @property
    def tools(self) -> list[MCPTool]:
        return list(self._tools or [])

    def asks_before(self, remote_name: str) -> bool:
        """Whether the settings say to ask before calls of the server's tool ``remote_name``."""
        approval = self.settings.require_approval
        return approval if isinstance(approval, bool) else remote_name in approval

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.discover()

    async def discover(self) -> None:
        """Start the server and learn its tools, once; the connection is kept for the first session."""
        if self._tools is not None:
            return
        if self._discovering is None:
            self._discovering = asyncio.Lock()
        async with self._discovering:
            if self._tools is not None:
                return
            connection = MCPConnection(self.name, self.settings)
            await connection.start()
            try:
                self._tools = self._chosen(await connection.list_tools())
            except BaseException:
                await connection.aclose()
                raise
            self._warm = connection

    def _chosen(self, listed: list[types.Tool]) -> list[MCPTool]:
        """The listed tools the settings let the agent have, each with a name of its own."""
        offered = [tool.name for tool in listed]
        for key, names in (("tools", self.settings.tools), ("require_approval", self.settings.require_approval)):
            missing = [name for name in names if name not in offered] if isinstance(names, list) else []
            if missing:
                raise ToolDefinitionError(
                    f"[mcp.servers.{self.name}] {key} names {missing[0]!r}, which the server does not offer "
                    f"(it offers: {', '.join(offered) or 'nothing'}).")
        allowed = self.settings.tools
        chosen: list[MCPTool] = []
        taken: set[str] = set()
        for remote in listed:
            if allowed is not None and remote.name not in allowed:
                continue
            name = tool_name(self.name, remote.name, taken)
            taken.add(name)
            chosen.append(MCPTool(self, remote, name))
        return chosen

    async def aclose(self) -> None:
        """Close the connection discovery opened, if no session took it."""
        warm, self._warm = self._warm, None
        if warm is not None:
            await warm.aclose()

    # -- calls --------------------------------------------------------------------------------------

    async def call(self, tool: MCPTool, arguments: dict[str, Any], context: ToolContext) -> ToolOutput:
        connection = await self.connection(context)
        try:
            result = await connection.call_tool(tool.remote_name, arguments)
        except ToolError as exc:
            if connection.alive:
                raise
            again = "started again" if self.settings.kind == "stdio" else "connected to again"
            raise ToolError(f"{exc} It is {again} at the next call to one of its tools.") from None
        return tool_output(result, context, tool.name, connection.redact)

    async def connection(self, context: ToolContext) -> MCPConnection:
        """The session's connection to the server: opened at its first use (or again after the server died),
        closed with the session.

        Calls made together share one opening: the first stores it in the session's state before awaiting.
        """
        key = f"mcp:{self.name}"
        opening: asyncio.Future[MCPConnection] | None = context.state.get(key)
        if opening is None or (opening.done() and (opening.cancelled() or opening.exception() is not None
                                                   or not opening.result().alive)):
            opening = context.state[key] = asyncio.ensure_future(self._open(context))
            opening.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved, always
        return await asyncio.shield(opening)

    async def _open(self, context: ToolContext) -> MCPConnection:
        warm, self._warm = self._warm, None
        loop = asyncio.get_running_loop()
        if warm is not None and warm.alive and warm.loop is loop:
            connection = warm
        else:
            if warm is not None and warm.loop is loop:
                await warm.aclose()
            elif warm is not None and warm.loop is not None and warm.loop.is_running():  # started on another loop
                asyncio.run_coroutine_threadsafe(warm.aclose(), warm.loop)
            connection = MCPConnection(self.name, self.settings)
            await connection.start()
        context.resources.push_async_callback(connection.aclose)  # the server stops with the session
        return connection

    def __repr__(self) -> str:
        return f"<MCPTools {self.name} ({self.settings.kind})>"
