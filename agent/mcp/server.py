"""This project's tools as an MCP server (``agent mcp serve``), on the official SDK's low-level ``Server``.

Every tool of a :class:`~agent.registry.ToolRegistry` is offered with its JSON schema; a call runs through
the registry as the agent's calls do (arguments checked, the policy's sections in force, failures as
error results) and its observation comes back as MCP content (:func:`~agent.mcp.content.call_result`:
text, images inline, files and citations as links).

Each MCP session is a session of the tools: its own ``python`` notebook (variables and ``/mnt/data`` last
across its calls, and no longer), its own browser history, closed when the session ends (the client
disconnects, sends ``DELETE``, or stays idle past the SDK's timeout). Sessions need the handshake era of
MCP (``initialize``, then ``Mcp-Session-Id`` over HTTP): the sessionless 2026-07-28 revision has no
place to keep a notebook. So stdio serves the handshake era only, over HTTP ``server/discover``
advertises only the handshake versions (clients then fall back to ``initialize``, as the SDK's own does),
and a request made in the sessionless era anyway is refused with the versions to use.

Transports: stdio (:meth:`ToolServer.serve_stdio`), and streamable HTTP (:meth:`ToolServer.serve_http`) on
loopback by default; a bearer token (checked by the SDK's bearer-auth middleware) is required to bind
anything else.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import socket
import sys
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import mcp_types as types
from mcp.server import Server
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.runner import serve_loop
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, UNSUPPORTED_PROTOCOL_VERSION
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from .. import __version__
from ..errors import AgentError
from ..messages import ToolCall
from ..registry import ToolRegistry, error_observation
from ..tool import ToolContext
from .content import call_result

INSTRUCTIONS = ("Tools of glm-agent. `python` runs code in a sandboxed Jupyter notebook that keeps its variables "
                "and /mnt/data for this MCP session; figures come back as images.")
SESSION_KEY = "glm_agent_context"  # where a connection's ToolContext lives in the SDK's per-connection state
LOOPBACK_NAMES = ("localhost",)


class TokenRequired(AgentError):
    """``agent mcp serve --http`` on an address other hosts reach, without a bearer token."""


class ToolServer:
    """The tools of ``registry`` as an MCP server named ``name``.

    ``runs_dir``: where each session's files go (``runs_dir/<session>/``, as the agent's runs do).
    ``approve``: run calls of tools the policy marks ``require_approval``; without it they are refused, as
    ``agent run`` refuses them when nobody can be asked.
    """

    def __init__(self, registry: ToolRegistry, *, runs_dir: str | Path, approve: bool = False,
                 name: str = "glm-agent"):
        self.registry = registry
        self.runs_dir = Path(runs_dir).absolute()
        self.approve = approve
        self.server: Server[Any] = Server(name, version=__version__, instructions=INSTRUCTIONS,
                                          on_list_tools=self._list_tools, on_call_tool=self._call_tool)
        self.server.add_request_handler("server/discover", types.RequestParams, self._discover)
        self.server.middleware.append(_sessions_only)

    # -- MCP requests -------------------------------------------------------------------------------

    async def _discover(self, ctx: Any, params: types.RequestParams | None) -> types.DiscoverResult:
        """Only the handshake era: a client that probes falls back to ``initialize`` and gets a session."""
        return types.DiscoverResult(supported_versions=list(HANDSHAKE_PROTOCOL_VERSIONS),
                                    capabilities=self.server.get_capabilities(), instructions=INSTRUCTIONS)

    async def _list_tools(self, ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[
            types.Tool(name=spec.name, description=spec.description or None, input_schema=spec.parameters)
            for spec in self.registry.specs()])

    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        if params.name not in self.registry.names:
            raise MCPError(INVALID_PARAMS, f"There is no tool named {params.name!r}: this server has "
                                           f"{', '.join(self.registry.names) or 'none'}.")
        call = ToolCall(id=str(ctx.request_id), name=params.name, arguments=dict(params.arguments or {}),
                        syntax="json")
        if self.registry.requires_approval(call.name) and not self.approve:
            observation = error_observation(call, f"Not run: the policy says to ask before each call to "
                                                  f"{call.name!r}, and this server was started without --yes.")
        else:
            observation = await self.registry.call(call, self._context(ctx))
        return await asyncio.to_thread(call_result, observation)  # reads the images it sends

    def _context(self, ctx: Any) -> ToolContext:
        """The session's tool context: made at its first call, closed (kernel and all) when the session ends."""
        connection = _connection(ctx)
        context = connection.state.get(SESSION_KEY)
        if context is None:
            session = (connection.session_id or uuid.uuid4().hex)[:12]
            context = ToolContext(run_id=session, artifacts_dir=self.runs_dir / session, policy=self.registry.policy,
                                  resources=AsyncExitStack())
            context.on_notice = _tell
            connection.state[SESSION_KEY] = context
            connection.exit_stack.push_async_callback(context.resources.aclose)
        return context

    # -- transports ---------------------------------------------------------------------------------

    async def serve_stdio(self) -> None:
        """Serve one client on stdin and stdout until it closes stdin (the SDK points fd 1 at stderr
        meanwhile, so nothing else a tool or a kernel prints can reach the wire)."""
        async with stdio_server() as (read, write), self.server.lifespan(self.server) as state:
            await self.registry.start()  # a kernel warms for the first session (after fd 1 was taken over)
            # The handshake era only (a probe of server/discover is refused, so clients fall back to
            # initialize): the dual-era loop would serve a client that opens with the sessionless era.
            await serve_loop(self.server, read, write, lifespan_state=state,
                             init_options=self.server.create_initialization_options())

    async def serve_http(self, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
                         on_ready: Any = None) -> None:
        """Serve streamable HTTP at ``http://host:port/mcp`` until cancelled. A host other than a loopback
        address needs ``token`` (clients send ``Authorization: Bearer TOKEN``); with one, every request does.
        ``on_ready(url)`` is called once the socket listens (``port=0``: a free port)."""
        import uvicorn

        if token is None and not is_loopback(host):
            raise TokenRequired(f"--host {host} lets other machines reach the sandbox: give a bearer token "
                                "(--token, or $AGENT_MCP_TOKEN), or serve on 127.0.0.1.")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise AgentError(f"Cannot listen on {host}:{port} ({exc.strerror}): choose another --port.") from None
        bound = sock.getsockname()[1]
        base = f"http://{f'[{host}]' if ':' in host else host}:{bound}"
        options: dict[str, Any] = {"host": host}
        if token is not None:
            options["token_verifier"] = _StaticToken(token)
            options["auth"] = AuthSettings(issuer_url=base, resource_server_url=None)
        app = self.server.streamable_http_app(**options)
        await self.registry.start()  # a kernel warms for the first session
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        try:
            while not server.started and not task.done():
                await asyncio.sleep(0.02)
            if server.started and on_ready is not None:
                on_ready(f"{base}/mcp")
            await task
        finally:
            if not task.done():
                server.should_exit = True
                await asyncio.wait_for(asyncio.shield(task), 10)
            sock.close()


async def _sessions_only(ctx: Any, call_next: Any) -> Any:
    """Refuse the sessionless (2026-07-28) era, but for the discovery that leads clients away from it."""
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS and ctx.method not in ("server/discover", "ping"):
        raise MCPError(UNSUPPORTED_PROTOCOL_VERSION,
                       "This server keeps a notebook per MCP session: connect with initialize (protocol "
                       f"{HANDSHAKE_PROTOCOL_VERSIONS[-1]}).",
                       data={"supported": list(HANDSHAKE_PROTOCOL_VERSIONS)})
    return await call_next(ctx)


def _connection(ctx: Any) -> Any:
    """The SDK's per-connection state (``Connection``: ``state``, ``exit_stack``, ``session_id``).

    SDK 2.3 hands low-level handlers a per-request ``ServerSession``; the connection it serves, whose
    ``state`` and ``exit_stack`` the SDK documents for handlers' per-connection data and cleanup, is
    reached through it until handlers are given ``ctx.connection`` (the SDK's announced context rework).
    """
    connection = getattr(ctx.session, "_connection", None)
    if connection is None or not hasattr(connection, "exit_stack"):
        raise RuntimeError("This version of the mcp SDK does not expose a connection's state to handlers; "
                           "install mcp>=2.3,<3.")
    return connection


class _StaticToken:
    """The SDK's ``TokenVerifier`` for one shared bearer token."""

    def __init__(self, token: str):
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self._token):
            return AccessToken(token=token, client_id="bearer", scopes=[])
        return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _tell(tool: str, message: str) -> None:
    """A tool's notice (the sandbox tier in force), for the client's server log."""
    print(f"agent mcp: {tool}: {message}", file=sys.stderr, flush=True)
