"""Real MCP servers for the tests, written with the SDK's ``MCPServer``: ``python mcp_servers.py MODE``.

MODE ``stdio`` serves on stdin/stdout; ``http`` (streamable HTTP) and ``sse`` serve on a free loopback
port and print ``READY <url>`` on stdout. ``garbage`` is no MCP server at all: it answers every line with
text that is not JSON-RPC.

The tools: ``echo``, ``add``, ``count`` (calls of this process so far), ``image`` (a 4x4 PNG as image content), ``note`` (an embedded text resource,
a PDF-like binary resource and a resource link), ``fail`` (an error result), ``crash`` (the process exits
mid-call), ``hang`` (never answers), ``header`` (a request header, over HTTP), ``env`` (an environment
variable) and ``dotted.name`` (a name with a character GLM-4 names cannot hold).
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import socket
import sys

import mcp_types as types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image

server = MCPServer("test-server")


@server.tool()
def echo(text: str) -> str:
    """Say the text back."""
    return text


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


calls = 0


@server.tool()
def count() -> int:
    """How many times this server process was called so far, this call included."""
    global calls
    calls += 1
    return calls


@server.tool()
def image(color: str = "red") -> Image:
    """A small square of one colour, as a PNG."""
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.new("RGB", (4, 4), color).save(buffer, format="PNG")
    return Image(data=buffer.getvalue(), format="png")


@server.tool()
def note() -> list[types.ContentBlock]:
    """A note, as resources."""
    return [types.EmbeddedResource(resource=types.TextResourceContents(uri="memo://note", text="Buy milk.",
                                                                       mime_type="text/plain")),
            types.EmbeddedResource(resource=types.BlobResourceContents(
                uri="memo://note.pdf", blob=base64.b64encode(b"%PDF-1.4 not really").decode(),
                mime_type="application/pdf")),
            types.ResourceLink(uri="https://example.org/notes", name="all notes")]


@server.tool()
def fail(why: str) -> str:
    """Always fails."""
    raise ToolError(f"cannot: {why}")


@server.tool()
def crash() -> str:
    """The server's process exits while answering."""
    print("about to crash: out of cheese", file=sys.stderr, flush=True)
    os._exit(3)


@server.tool()
async def hang() -> str:
    """Never answers."""
    await asyncio.sleep(3600)
    return "late"


@server.tool()
def header(name: str, ctx: Context) -> str:
    """A header of the HTTP request this call came in."""
    return (ctx.headers or {}).get(name.lower(), "<none>")


@server.tool()
def env(name: str) -> str:
    """An environment variable of the server's process."""
    return os.environ.get(name, "<unset>")


@server.tool(name="dotted.name")
def dotted() -> str:
    """A tool whose name has a dot."""
    return "dotted"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(mode: str) -> None:
    if mode == "stdio":
        server.run()
    elif mode == "garbage":
        for line in sys.stdin:
            print("hello from a program that is not an MCP server", flush=True)
    else:
        port = _free_port()
        path = "/mcp" if mode == "http" else "/sse"
        print(f"READY http://127.0.0.1:{port}{path}", flush=True)
        if mode == "http":
            server.run("streamable-http", host="127.0.0.1", port=port)
        else:
            server.run("sse", host="127.0.0.1", port=port)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "stdio")
