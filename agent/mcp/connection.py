"""One live connection to one MCP server, on the official SDK (``mcp``).

The SDK's transports are anyio task groups that must be left by the task that entered them, while an
agent's calls come from whichever task runs the turn and the session closes from yet another. So each
connection lives in a task of its own (:meth:`MCPConnection._own`), which opens the SDK's ``Client``,
says it is ready and waits to be told to stop; calls go through the open client from any task of the
same event loop.

Whatever goes wrong comes out as one sentence (:class:`~agent.errors.ToolError`) that names the server:
a command that is not installed, a server that exits (with the last lines it wrote on stderr), one that
does not answer in time (``startup_timeout_s``, ``timeout_s``), one that writes what is not MCP, one that
refuses the credentials.
Values read from ``${VAR}`` never appear in those sentences nor in results (:meth:`MCPConnection.redact`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import tempfile
from typing import IO, Any

import httpx2
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT
from pydantic import ValidationError

from .. import __version__
from ..errors import ToolError
from ..models._http import redact_credentials
from .settings import MCPServerSettings, expand

if sys.version_info < (3, 11):  # pragma: no cover - Python 3.10 (anyio depends on the backport there)
    from exceptiongroup import BaseExceptionGroup

# The SDK logs a server's faults with tracebacks; this package reports them as sentences. A handler here
# keeps Python's last-resort handler from printing them where nobody configured logging.
logging.getLogger("mcp").addHandler(logging.NullHandler())

STDERR_TAIL = 600  # characters of a server's stderr quoted when it fails
MAX_LISTED = 20  # pages of tools/list read before giving up on a server that never stops paging
CLOSE_S = 8.0  # how long closing may take (the SDK gives a stdio server 2 s, then SIGTERM, then SIGKILL)
CLIENT_INFO = types.Implementation(name="glm-agent", version=__version__)


class MCPConnection:
    """A connection to the server ``name``; :meth:`start` opens it, :meth:`aclose` ends it (and the
    server's process, for a local one)."""

    def __init__(self, name: str, settings: MCPServerSettings):
        self.name = name
        self.settings = settings
        self.secrets: set[str] = set()
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._stderr: IO[str] | None = None
        self._not_mcp: list[str] = []  # what the server sent that is not MCP, for the error that follows
        self._http_status: int | None = None  # the last HTTP error status a remote server answered
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ended: str | None = None  # why the connection is over, once it is

    @property
    def client(self) -> Client | None:
        """The SDK's ``Client`` while connected (``None`` otherwise), for what this class does not wrap
        (the server's resources and prompts, say)."""
        return self._client if self.ended is None else None

    @property
    def alive(self) -> bool:
        return self._client is not None and self.ended is None

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the server (or reach it) and complete MCP's handshake, within ``startup_timeout_s``."""
        transport = self._transport()  # a variable that is not set is said before anything starts
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        ready: asyncio.Future[None] = self.loop.create_future()
        self._task = asyncio.create_task(self._own(transport, ready), name=f"mcp-{self.name}")
        limit = self.settings.startup_timeout_s
        try:
            await asyncio.wait_for(asyncio.shield(ready), limit)
        except asyncio.TimeoutError:
            await self.aclose()
            raise ToolError(self._sentence(f"did not start: it did not answer within {limit:g} s ([mcp.servers."
                                           f"{self.name}] startup_timeout_s){self._evidence()}")) from None
        except BaseException:
            await self.aclose()
            raise

    async def _own(self, transport: Any, ready: asyncio.Future[None]) -> None:
        """The connection's own task: enter the SDK's client, hand it out, leave it when told to stop."""
        assert self._stop is not None
        try:
            async with Client(transport, client_info=CLIENT_INFO, message_handler=self._on_message,
                              cache=None) as client:
                self._client = client
                ready.set_result(None)
                await self._stop.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the server failed: the starter, or the next call, says so
            problem = self._describe(exc)
            self.ended = problem
            if not ready.done():
                ready.set_exception(ToolError(self._sentence(f"did not start: {problem}")))
        finally:
            self._client = None
            if self.ended is None:
                self.ended = "the connection was closed"

    async def aclose(self) -> None:
        """End the connection and, for a local server, its process (at once if it is still starting)."""
        task, self._task = self._task, None
        if task is None:
            return
        if self._client is None:  # still starting (or failed): nothing to wind down gently
            task.cancel()
        elif self._stop is not None:
            self._stop.set()
        try:
            done, _ = await asyncio.wait({task}, timeout=CLOSE_S)  # the task's own failure was recorded: not raised
            if not done:
                task.cancel()
                await asyncio.wait({task}, timeout=CLOSE_S)
        except asyncio.CancelledError:  # this close was cancelled: the task goes at once
            task.cancel()
            raise
        finally:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved, so asyncio does not report it
            if self._stderr is not None:
                self._stderr.close()
                self._stderr = None

    # -- requests -----------------------------------------------------------------------------------

    async def list_tools(self) -> list[types.Tool]:
        """Every tool the server offers, all pages."""
        tools: list[types.Tool] = []
        cursor: str | None = None
        for _ in range(MAX_LISTED):
            result = await self._request("list its tools", lambda client: client.list_tools(cursor=cursor))
            tools += result.tools
            cursor = result.next_cursor
            if not cursor:
                return tools
        raise ToolError(self._sentence(f"lists its tools on more than {MAX_LISTED} pages; giving up"))

    async def call_tool(self, tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """Call ``tool``; a server that fails or is silent past ``timeout_s`` raises :class:`ToolError`."""
        return await self._request(f"answer the call to {tool!r}", lambda client: client.call_tool(
            tool, arguments, read_timeout_seconds=self.settings.timeout_s))

    async def _request(self, what: str, send: Any) -> Any:
        client = self._client
        if client is None or self.ended is not None:
            raise ToolError(self._sentence(f"is not running ({self.ended or 'not started'})"))
        timeout = self.settings.timeout_s
        since = self._stderr_size()  # what the server says on stderr from now on is about this request
        self._http_status = None
        try:  # the SDK's own timeout first (it tells the server); this one if even that does not return
            return await _within(timeout + 2.0, send(client))
        except asyncio.TimeoutError:
            raise ToolError(self._timed_out(what, since)) from None
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                raise ToolError(self._timed_out(what, since)) from None
            if exc.code == CONNECTION_CLOSED:
                self.ended = f"it closed the connection (it exited?){self._evidence(since)}"
                raise ToolError(self._sentence(f"did not {what}: {self.ended}")) from None
            raise ToolError(self._sentence(f"did not {what}: {self._describe(exc, since)}")) from None
        except ToolError:
            raise
        except Exception as exc:  # a reply that does not validate, a dropped HTTP connection...
            raise ToolError(self._sentence(f"did not {what}: {self._describe(exc, since)}")) from None

    def _timed_out(self, what: str, since: int) -> str:
        return self._sentence(f"did not {what} within {self.settings.timeout_s:g} s ([mcp.servers.{self.name}] "
                              f"timeout_s){self._evidence(since)}")

    # -- transports ---------------------------------------------------------------------------------

    def _transport(self) -> Any:
        settings, where = self.settings, f"[mcp.servers.{self.name}]"
        if settings.kind == "stdio":
            env, self.secrets = expand(settings.env, f"{where} env")
            self._stderr = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")
            parameters = StdioServerParameters(command=str(settings.command), args=list(settings.args),
                                               env=env, cwd=settings.cwd)
            return stdio_client(parameters, errlog=self._stderr)
        headers, self.secrets = expand(settings.headers, f"{where} headers")
        url = str(settings.url)
        hooks = {"response": [self._on_response]}  # the SDK reports a refusal without its HTTP status

        def http_client(headers: dict[str, str] | None = None, timeout: httpx2.Timeout | None = None,
                        auth: httpx2.Auth | None = None) -> httpx2.AsyncClient:
            return httpx2.AsyncClient(headers=headers, timeout=timeout, auth=auth, event_hooks=hooks)

        if settings.kind == "sse":
            return sse_client(url, headers=headers, timeout=settings.timeout_s, sse_read_timeout=3600,
                              httpx_client_factory=http_client)
        client = http_client(headers, httpx2.Timeout(settings.timeout_s, read=3600))
        return _closing(client, streamable_http_client(url, http_client=client))

    async def _on_response(self, response: httpx2.Response) -> None:
        if response.status_code >= 400:
            self._http_status = response.status_code

    async def _on_message(self, message: Any) -> None:
        """What the SDK receives besides replies: a line that is not MCP is kept for the error that follows."""
        if isinstance(message, Exception) and len(self._not_mcp) < 3:
            sent: Any = message
            if isinstance(message, ValidationError) and message.errors():  # the line itself, not pydantic's words
                sent = message.errors()[0].get("input", message)
            self._not_mcp.append(str(sent)[:120])

    # -- words --------------------------------------------------------------------------------------

    def _sentence(self, text: str) -> str:
        return self.redact(f"The MCP server {self.name!r} {text}.")

    def redact(self, text: str) -> str:
        """``text`` without the values that came from ``${VAR}`` nor credentials in URLs."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return redact_credentials(text)

    def _evidence(self, since: int = 0) -> str:
        """What the server left behind that says why: what it sent that is not MCP, the end of what it wrote
        on stderr (after offset ``since``)."""
        parts = []
        if self._not_mcp:
            parts.append(f"; it wrote what is not MCP: {self._not_mcp[0]!r}")
        tail = self._stderr_tail(since)
        if tail:
            parts.append(f"; its stderr ends: {tail}")
        return "".join(parts)

    def _stderr_size(self) -> int:
        if self._stderr is None:
            return 0
        try:
            return os.fstat(self._stderr.fileno()).st_size
        except (OSError, ValueError):
            return 0

    def _stderr_tail(self, since: int = 0) -> str:
        """The last lines the server wrote on stderr (the child writes the file itself; we only read it)."""
        if self._stderr is None:
            return ""
        try:
            size = self._stderr_size()
            self._stderr.seek(max(since, size - 4 * STDERR_TAIL))
            text = self._stderr.read()
        except (OSError, ValueError):
            return ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return " | ".join(lines[-4:])[-STDERR_TAIL:]

    def _describe(self, exc: BaseException, since: int = 0) -> str:
        """Why the connection failed, in words, from what the SDK raised (often an exception group)."""
        exc = _leaf(exc)
        settings = self.settings
        if isinstance(exc, FileNotFoundError) and settings.kind == "stdio":
            where = f" in {settings.cwd}" if settings.cwd and not os.path.isdir(settings.cwd) else ""
            if where:
                return f"its cwd {settings.cwd!r} is not a folder"
            return f"its command {settings.command!r} was not found (is it installed, and on PATH?)"
        if isinstance(exc, PermissionError) and settings.kind == "stdio":
            return f"its command {settings.command!r} cannot be run ({exc.strerror})"
        if isinstance(exc, httpx2.HTTPStatusError):
            return f"{settings.url} answered HTTP {exc.response.status_code}{_http_hint(exc.response.status_code)}"
        if isinstance(exc, httpx2.TransportError):
            return f"{settings.url} cannot be reached ({type(exc).__name__}: {exc or 'no detail'})"
        if isinstance(exc, MCPError):
            if exc.code == CONNECTION_CLOSED:
                return f"it closed the connection (it exited?){self._evidence(since)}"
            if exc.code == REQUEST_TIMEOUT:
                return f"it did not answer{self._evidence(since)}"
            status = f" (HTTP {self._http_status}{_http_hint(self._http_status)})" if self._http_status else ""
            return f"it answered with an error: {exc.error.message}{status}{self._evidence(since)}"
        return f"{type(exc).__name__}: {exc}{self._evidence(since)}"


async def _within(seconds: float, awaitable: Any) -> Any:
    """``await awaitable``, or ``asyncio.TimeoutError`` after ``seconds`` (a timeout scope where there is one:
    no extra task per call, as ``wait_for`` makes)."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)  # pragma: no cover - Python 3.10


def _http_hint(status: int) -> str:
    return ": the credentials were refused, check its headers" if status in (401, 403) else ""


def _leaf(exc: BaseException) -> BaseException:
    """The first exception in a (nested) exception group that says something, or ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = (inner or list(exc.exceptions))[0]
    return exc


@contextlib.asynccontextmanager
async def _closing(client: httpx2.AsyncClient, transport: Any) -> Any:
    """``transport``, then the HTTP client it was given (the SDK leaves a client it did not make open)."""
    async with client:
        async with transport as streams:
            yield streams
